"""Parameter counts and training FLOPs of a decoder-only transformer, from a recipe's `model` section.

The trainer (its MFU) and `hpctl plan` (`recipes list`, the memory estimate) need the size of the
model a recipe describes without importing torch or transformers, so the count is computed from the
HyperPod v1 architecture fields; it lives in the trainer's package, which hpctl sits on. The formulas follow the transformers modeling code that the trainer builds
(LlamaForCausalLM and relatives), so the counts are exact for these families; the tests check them
against real transformers models on the meta device.

Fields read (HyperPod v1 names, plus the transformers names the MoE/MLA recipes use):
  hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads (default: heads),
  head_dim (default: the family's, else hidden_size / heads), vocab_size, intermediate_size,
  tie_word_embeddings (default false), attention_bias, mlp_bias;
  MoE: num_local_experts | num_experts | n_routed_experts, num_experts_per_tok,
  moe_intermediate_size (default intermediate_size), n_shared_experts,
  shared_expert_intermediate_size, first_k_dense_replace;
  MLA (DeepSeek V3): q_lora_rank, kv_lora_rank, qk_rope_head_dim, qk_nope_head_dim, v_head_dim.

Family traits come from `model_type` (HyperPod's or transformers' name): Qwen2 has q/k/v biases,
Qwen3 has per-head q/k norms, gpt-oss has biases everywhere, attention sinks and a 64-wide head by
default. A model is a mixture of experts when it names more than one expert, whatever HyperPod's
`moe` flag (an SMP implementation switch) says. Only the fields present are counted: a recipe that
omits a family's expert or MLA fields (HyperPod's deepseek_r1 and llama_v4 recipes do) is counted
as the dense model its fields describe, which is also what the trainer would build from them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapter.numbers import whole


@dataclass(frozen=True)
class Arch:
    """The architecture numbers every formula here needs, with defaults filled in."""

    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int  # query/key width per head (MLA: nope + rope)
    v_head_dim: int
    vocab: int
    intermediate: int  # dense MLP width
    tied: bool
    experts: int  # routed experts per MoE layer; 0 for a dense model
    top_k: int
    moe_intermediate: int
    shared_intermediate: int  # total width of the always-on shared expert(s)
    dense_layers: int  # leading layers with a dense MLP in a MoE model
    q_lora_rank: int  # MLA; 0 when absent
    kv_lora_rank: int  # MLA; 0 when absent
    qk_rope_head_dim: int
    attention_bias: bool  # bias on q, k, v and o
    qkv_bias: bool  # bias on q, k and v only (Qwen2)
    qk_norm: bool  # per-head RMSNorm on q and k (Qwen3)
    mlp_bias: bool
    sinks: bool  # one learned logit per head (gpt-oss)
    expert_bias: bool  # biases on routers and expert projections (gpt-oss)

    @property
    def moe(self) -> bool:
        return self.experts > 1

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.moe else 0


def _int(model: Mapping[str, Any], *keys: str, default: int = 0) -> int:
    """The first of `keys` that holds a whole number; `default` otherwise."""
    for key in keys:
        value = whole(model.get(key))
        if value is not None:
            return value
    return default


def _bool(model: Mapping[str, Any], key: str, default: bool) -> bool:
    value = model.get(key)
    return value if isinstance(value, bool) else default


def architecture(model: Mapping[str, Any]) -> Arch:
    """Normalise a recipe's `model` section (HyperPod v1 fields) into an Arch."""
    model_type = str(model.get("model_type") or "").lower()
    qwen2 = "qwen" in model_type and "qwen3" not in model_type
    gpt_oss = "gpt_oss" in model_type
    hidden = _int(model, "hidden_size")
    heads = max(_int(model, "num_attention_heads", default=1), 1)
    experts = _int(model, "num_local_experts", "num_experts", "n_routed_experts")
    intermediate = _int(model, "intermediate_size")
    kv_lora_rank = _int(model, "kv_lora_rank")
    rope_dim = _int(model, "qk_rope_head_dim") if kv_lora_rank else 0
    head_dim = _int(model, "head_dim", default=64 if gpt_oss else hidden // heads)
    if kv_lora_rank:
        head_dim = _int(model, "qk_nope_head_dim", default=head_dim) + rope_dim
    moe_intermediate = _int(model, "moe_intermediate_size", default=intermediate)
    shared = _int(model, "shared_expert_intermediate_size") or _int(model, "n_shared_experts") * moe_intermediate
    return Arch(
        model_type=model_type,
        hidden=hidden,
        layers=_int(model, "num_hidden_layers"),
        heads=heads,
        kv_heads=_int(model, "num_key_value_heads", default=heads),
        head_dim=head_dim,
        v_head_dim=_int(model, "v_head_dim", default=head_dim) if kv_lora_rank else head_dim,
        vocab=_int(model, "vocab_size"),
        intermediate=intermediate,
        tied=_bool(model, "tie_word_embeddings", False),
        experts=experts if experts > 1 else 0,
        top_k=_int(model, "num_experts_per_tok", default=2) if experts > 1 else 0,
        moe_intermediate=moe_intermediate,
        shared_intermediate=shared if experts > 1 else 0,
        dense_layers=_int(model, "first_k_dense_replace") if experts > 1 else 0,
        q_lora_rank=_int(model, "q_lora_rank") if kv_lora_rank else 0,
        kv_lora_rank=kv_lora_rank,
        qk_rope_head_dim=rope_dim,
        attention_bias=_bool(model, "attention_bias", gpt_oss),
        qkv_bias=qwen2,
        qk_norm="qwen3" in model_type,
        mlp_bias=_bool(model, "mlp_bias", False),
        sinks=gpt_oss,
        expert_bias=gpt_oss,
    )


@dataclass(frozen=True)
class Linear:
    """One kind of projection: its name in transformers, its shape, and how many the model has."""

    name: str
    in_features: int
    out_features: int
    count: int  # instances in the whole model
    expert: bool = False  # a routed expert's weight (sharded by expert parallelism)

    @property
    def params(self) -> int:
        return self.in_features * self.out_features


def attention_linears(a: Arch) -> list[Linear]:
    """The projections of one attention block (count 1 each)."""
    h, n = a.hidden, a.heads
    if a.mla:
        q = ([Linear("q_a_proj", h, a.q_lora_rank, 1), Linear("q_b_proj", a.q_lora_rank, n * a.head_dim, 1)]
             if a.q_lora_rank else [Linear("q_proj", h, n * a.head_dim, 1)])
        return q + [
            Linear("kv_a_proj_with_mqa", h, a.kv_lora_rank + a.qk_rope_head_dim, 1),
            Linear("kv_b_proj", a.kv_lora_rank, n * (a.head_dim - a.qk_rope_head_dim + a.v_head_dim), 1),
            Linear("o_proj", n * a.v_head_dim, h, 1),
        ]
    kv = a.kv_heads * a.head_dim
    return [Linear("q_proj", h, n * a.head_dim, 1), Linear("k_proj", h, kv, 1), Linear("v_proj", h, kv, 1),
            Linear("o_proj", n * a.head_dim, h, 1)]


def mlp_linears(width: int, hidden: int) -> list[Linear]:
    """A SwiGLU MLP of the given intermediate width."""
    return [Linear("gate_proj", hidden, width, 1), Linear("up_proj", hidden, width, 1),
            Linear("down_proj", width, hidden, 1)]


def linears(a: Arch) -> list[Linear]:
    """Every decoder-layer projection of the model, with counts (for LoRA and tensor parallelism)."""
    out = [Linear(x.name, x.in_features, x.out_features, a.layers) for x in attention_linears(a)]
    dense = a.layers - a.moe_layers
    if dense:
        out += [Linear(x.name, x.in_features, x.out_features, dense) for x in mlp_linears(a.intermediate, a.hidden)]
    if a.moe:
        out += [Linear("experts." + x.name, x.in_features, x.out_features, a.moe_layers * a.experts, expert=True)
                for x in mlp_linears(a.moe_intermediate, a.hidden)]
        if a.shared_intermediate:
            out += [Linear("shared_experts." + x.name, x.in_features, x.out_features, a.moe_layers)
                    for x in mlp_linears(a.shared_intermediate, a.hidden)]
    return out


@dataclass(frozen=True)
class ParamCounts:
    """Parameters by where they live, so sharding rules can treat each part on its own terms."""

    embedding: int  # input embedding
    lm_head: int  # output projection; 0 when tied to the embedding
    final_norm: int
    attention: int  # per layer: projections, biases, q/k norms, sinks, MLA norms
    norms: int  # per layer: the two RMSNorms
    dense_mlp: int  # per dense layer
    moe_router: int  # per MoE layer: router and shared experts (every token uses them)
    moe_expert: int  # per MoE layer: one routed expert
    arch: Arch

    @property
    def dense_layer(self) -> int:
        return self.attention + self.norms + self.dense_mlp

    @property
    def moe_layer_shared(self) -> int:
        """A MoE layer's parameters outside the routed experts."""
        return self.attention + self.norms + self.moe_router

    @property
    def experts_total(self) -> int:
        return self.moe_expert * self.arch.experts * self.arch.moe_layers

    @property
    def layers_total(self) -> int:
        a = self.arch
        dense = a.layers - a.moe_layers
        return dense * self.dense_layer + a.moe_layers * self.moe_layer_shared + self.experts_total

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.final_norm + self.layers_total

    @property
    def active(self) -> int:
        """Parameters one token passes through (MoE: only its top-k experts)."""
        a = self.arch
        return self.total - self.experts_total + self.moe_expert * a.top_k * a.moe_layers


def param_counts(model: Mapping[str, Any]) -> ParamCounts:
    a = architecture(model)
    h = a.hidden
    attention = sum(x.params for x in attention_linears(a))
    if a.mla:
        attention += a.q_lora_rank + a.kv_lora_rank  # q_a_layernorm, kv_a_layernorm
    elif a.attention_bias:
        attention += a.heads * a.head_dim + 2 * a.kv_heads * a.head_dim + h
    elif a.qkv_bias:
        attention += a.heads * a.head_dim + 2 * a.kv_heads * a.head_dim
    if a.qk_norm:
        attention += 2 * a.head_dim
    if a.sinks:
        attention += a.heads
    mlp_bias = 2 * a.intermediate + h if a.mlp_bias else 0
    router = expert = 0
    if a.moe:
        router = a.experts * h + (a.experts if a.expert_bias else 0)
        router += 3 * h * a.shared_intermediate
        if a.shared_intermediate and "qwen" in a.model_type:
            router += h  # Qwen MoE's shared-expert gate
        expert = 3 * h * a.moe_intermediate + (2 * a.moe_intermediate + h if a.expert_bias else 0)
    return ParamCounts(
        embedding=a.vocab * h,
        lm_head=0 if a.tied else a.vocab * h,
        final_norm=h,
        attention=attention,
        norms=2 * h,
        dense_mlp=3 * h * a.intermediate + mlp_bias,
        moe_router=router,
        moe_expert=expert,
        arch=a,
    )


def param_count(model: Mapping[str, Any], active: bool = False) -> int:
    """Total parameters, or with `active` those one token uses (they differ only for MoE)."""
    counts = param_counts(model)
    return counts.active if active else counts.total


def flops_per_token(model: Mapping[str, Any], seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), as torchtitan's `get_num_flop_per_token`.

    6 x the active parameters that do matrix work (the input embedding is a lookup and does none;
    the output projection does, also when it shares the embedding's weight), plus the attention
    score and value products:
    2 matmuls forward and 4 backward, 2 FLOPs per multiply-add, over the full causal window
    (no credit for causal sparsity, no count of recomputation), i.e. 12 x layers x heads x
    head_dim x seq_len when query and value widths match.
    """
    counts = param_counts(model)
    a = counts.arch
    matmul_params = counts.active - counts.embedding + (a.vocab * a.hidden if a.tied else 0)
    attention = 6 * a.layers * a.heads * (a.head_dim + a.v_head_dim) * seq_len
    return float(6 * matmul_params + attention)
