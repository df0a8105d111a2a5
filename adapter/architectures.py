"""The model families the trainer builds and the architecture arithmetic they must satisfy.

Torch-free, so the same rules run inside the job (models.py, parallel.py) and at plan time
(v1.py, which config.py and so hpctl call): a recipe whose heads do not divide its hidden size, or whose
tensor-parallel degree does not divide its heads, is refused by `hpctl plan` at the recipe's line
instead of by transformers or DTensor after the job waited in a queue.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapter.reader import ConfigError

# Fields every decoder config takes (HyperPod name -> transformers name); the first five are required.
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
OPTIONAL = ("num_key_value_heads", "initializer_range", "rope_theta", "rope_scaling", "head_dim",
            "tie_word_embeddings", "attention_bias", "mlp_bias")
MOE = ("num_local_experts", "num_experts_per_tok", "router_aux_loss_coef")
MLA = ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "n_shared_experts",
       "first_k_dense_replace", "q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
       "v_head_dim", "n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob")

# model_type -> (transformers config class, extra recipe fields it takes, transformers model_type)
ARCHITECTURES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "llama_v3": ("LlamaConfig", (), "llama"),
    "deepseek_r1_llama_v3": ("LlamaConfig", (), "llama"),
    "mistral": ("MistralConfig", ("sliding_window",), "mistral"),
    "mixtral": ("MixtralConfig", ("sliding_window",) + MOE, "mixtral"),
    "qwen_v2": ("Qwen2Config", ("sliding_window", "use_sliding_window", "max_window_layers"), "qwen2"),
    "deepseek_r1_qwen_v2": ("Qwen2Config", ("sliding_window", "use_sliding_window", "max_window_layers"), "qwen2"),
    "llama_v4": ("Llama4TextConfig", MOE + ("intermediate_size_mlp", "interleave_moe_layer_step"), "llama4_text"),
    "deepseek_r1": ("DeepseekV3Config", MLA, "deepseek_v3"),
    "gpt_oss": ("GptOssConfig", ("sliding_window",) + MOE, "gpt_oss"),
    "falcon": ("FalconConfig", ("num_kv_heads", "new_decoder_architecture", "multi_query", "parallel_attn", "bias"),
               "falcon"),
}

# transformers model_type values whose decoder layers have a tensor-parallel plan (parallel.py).
TP_FAMILIES = ("llama", "mistral", "qwen2", "mixtral")
TP = "model.tensor_model_parallel_degree"


def required_fields(model_type: str) -> tuple[str, ...]:
    """The recipe fields a model of this family cannot be built without (Falcon has no MLP width)."""
    return tuple(k for k in REQUIRED if not (k == "intermediate_size" and model_type == "falcon"))


def arithmetic_problems(model_type: str, arch: Mapping[str, Any]) -> list[ConfigError]:
    """Shape rules transformers relies on: heads split the hidden size (unless head_dim is given),
    key/value heads split the heads (grouped-query attention repeats them), RoPE rotates pairs."""
    def size(key: str) -> int | None:
        value = arch.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    out: list[ConfigError] = []
    hidden, heads = size("hidden_size"), size("num_attention_heads")
    kv = size("num_kv_heads" if model_type == "falcon" else "num_key_value_heads")
    head_dim = size("head_dim")
    if model_type == "deepseek_r1":  # MLA: head sizes are their own fields
        return out
    if hidden and heads and head_dim is None and hidden % heads:
        out.append(ConfigError("model.hidden_size", f"{hidden} is not divisible by num_attention_heads ({heads})",
                               f"choose a multiple of {heads}, or set model.head_dim"))
    if heads and kv and heads % kv:
        out.append(ConfigError("model.num_key_value_heads" if model_type != "falcon" else "model.num_kv_heads",
                               f"{kv} does not divide num_attention_heads ({heads}): grouped-query attention "
                               "shares each key/value head among an equal number of query heads",
                               f"use a divisor of {heads}"))
    dim = head_dim or (hidden // heads if hidden and heads and hidden % heads == 0 else None)
    if dim is not None and dim % 2:
        out.append(ConfigError("model.head_dim" if head_dim else "model.hidden_size",
                               f"the attention head size {dim} is odd: rotary embeddings rotate pairs of dimensions",
                               "use an even head size"))
    return out


def tp_problems(hf_model_type: str, sizes: Mapping[str, Any], tp: int) -> list[ConfigError]:
    """Whether this trainer's tensor-parallel plan can split a model of this family `tp` ways:
    the family has a plan, and tp divides the heads, key/value heads and the MLP width (Mixtral:
    the experts, which are split whole). The vocabulary need not divide tp: the embedding and LM
    head are not split (parallel.parallelize)."""
    if tp <= 1:
        return []
    if hf_model_type not in TP_FAMILIES:
        return [ConfigError(TP, f"tensor parallelism is implemented for {', '.join(TP_FAMILIES)} models, "
                                f"not {hf_model_type}", "set it to 1 and let FSDP shard the model")]
    keys = ["num_attention_heads", "num_key_value_heads"]
    keys.append("num_local_experts" if hf_model_type == "mixtral" else "intermediate_size")
    out = []
    for key in keys:
        value = sizes.get(key)
        if key == "num_key_value_heads" and value is None:
            value = sizes.get("num_attention_heads")
        if isinstance(value, int) and value > 0 and value % tp:
            out.append(ConfigError(TP, f"{tp} does not divide model.{key} ({value})",
                                   f"use a tensor-parallel degree that divides {value}"))
            break
    return out


# transformers model_type values whose attention context parallelism can split: plain causal SDPA
# (no sliding window, attention sinks or cross-attention), which torch's ring attention replaces.
CP_FAMILIES = ("llama", "mistral", "qwen2", "mixtral")
CP = "model.context_parallel_degree"


def cp_problems(hf_model_type: str, sizes: Mapping[str, Any], cp: int) -> list[ConfigError]:
    """Whether ring attention can split this model's sequences `cp` ways: the family attends with
    plain causal SDPA, and no sliding window is on (a windowed mask is not the causal mask ring
    attention computes)."""
    if cp <= 1:
        return []
    if hf_model_type not in CP_FAMILIES:
        return [ConfigError(CP, f"context parallelism is implemented for {', '.join(CP_FAMILIES)} models "
                                f"(plain causal attention), not {hf_model_type}", "set it to 1")]
    if hf_model_type == "qwen2":  # Qwen2 windows only with use_sliding_window (off by default)
        windowed = bool(sizes.get("use_sliding_window"))
    else:  # transformers' Mistral and Mixtral window by default (4096) unless sliding_window is null
        windowed = hf_model_type != "llama" and ("sliding_window" not in sizes or sizes["sliding_window"] is not None)
    if windowed:
        return [ConfigError(CP, f"{cp}: ring attention computes the full causal mask, not a sliding window",
                            "set model.sliding_window: null (or use_sliding_window: false), or set it to 1")]
    return []
