"""An analytic estimate of the peak memory one training process needs on its device.

Plan shows it and the pre-flight check compares it with the device's memory, so it must be fast,
explainable and free of torch. It models what the trainer does (FSDP2 over decoder layers and the
root module, transformers modeling code, AdamW) and counts the bytes of live tensors at the peak;
`torch.cuda.max_memory_allocated()` on a GPU, or peak RSS growth on a CPU with
`MALLOC_MMAP_THRESHOLD_=65536` (so glibc hands freed blocks back), is what it should be compared with.
The runtime (CUDA context and NCCL buffers, or the interpreter and libraries) is added on top as
`overhead_gb`, so `total_gb - overhead_gb` is the tensor part.

Assumptions, each a choice the trainer (adapter/) is expected to match:

Layout. world = trainer.num_nodes x devices (local clusters: cluster.nproc_per_node when set).
  tp, ep, cp = model.tensor_model_parallel_degree, expert_model_parallel_degree,
  context_parallel_degree (default 1); data parallel dp = world / (tp x cp). The FSDP shard group S:
  no_shard / ddp: 1; full_shard and hybrid_shard: model.shard_degree when set, else dp x cp, at most
  dp x cp (context-parallel ranks hold the same weights, so FSDP shards across them too); hybrid
  replicates across groups, which costs no memory. shard_grad_op (ZeRO-2) shards like full_shard but
  keeps every layer's gathered weights from forward to backward. Under trainer.fault_tolerance each
  replica group is its own world, so S is counted within one group (world / replica_groups).
Weights. Tensor parallelism splits every decoder-layer weight by tp; embeddings and the output
  projection stay whole across tp (the plan shards only the attention and MLP projections) and are
  sharded by FSDP alone. Routed experts are split by ep x tp and FSDP-sharded over S / ep.
Precision. As the trainer reads it (adapter.config.precision_of over trainconfig.PRECISIONS): bf16,
  bf16-mixed and bf16-true are mixed precision as FSDP2's MixedPrecisionPolicy(param_dtype=bf16,
  reduce_dtype=fp32): the sharded parameters stay fp32 (the master copy), sharded gradients are
  fp32 and AdamW keeps two fp32 states, i.e. 16 bytes per trainable parameter divided by S;
  computation, activations and the all-gathered weights are 16-bit. 32, fp32 and 32-true are fp32
  throughout, and so is a spelling the trainer refuses (fp16, 16-mixed, ...: the plan reports it).
  fp8 is counted as bf16.
Gathered weights. The trainer asks FSDP2 to reshard every module after its forward, the root
  (embedding, final norm, output projection) included, so at the loss nothing is gathered: the root
  is gathered again only once the loss's gradient reaches the logits. Once backward reaches the
  layers (the loss tensors are freed by then), the output projection's full-size gradient waits for
  the root's reduce-scatter, two
  decoder layers are gathered at once (the one computing and the one prefetched) and one layer's
  gradients exist unsharded in the compute dtype and in fp32 for the reduce. shard_grad_op keeps
  every layer gathered from forward on. With one rank in fp32 the trainer runs no FSDP2 at all.
Activations. Per token of one micro batch (model.train_batch_size x max_context_width / cp),
  in the compute dtype a (2 or 4 bytes), as counted from the tensors transformers' Llama code saves
  for backward with SDPA attention:
    each of the two RMSNorms: an fp32 copy of its input plus its normalised output and the
      weighted output, h x (4 + 2a);
    attention: rotated q and k, v, and the attention output, a x (2 q_dim + 2 kv_dim) / tp; the fused
      kernels (flash on GPU in bf16, flash on CPU) keep no seq x seq matrix, but fp32 with
      grouped-query attention on a GPU runs SDPA's math kernel, which keeps the fp32 probabilities,
      4 x heads x seq / tp more (and two more such matrices while a layer runs backward);
    dense SwiGLU MLP: gate, up, act(gate), product, a x 4 x intermediate / tp;
    MoE MLP: per routed copy of a token (top_k) the gathered input and output and the SwiGLU
      tensors, a x top_k x (4 x moe_intermediate + 2h) / tp, plus shared experts as a dense MLP;
    final norm as above; loss (transformers upcasts the logits to fp32): the log-softmax output, its
      gradient and the logits' gradient, 12 x vocab bytes (the logits are not split by tp).
  Norm activations are not split by tp (no sequence parallelism). Without activation checkpointing
  all layers keep theirs. With it each layer keeps only its input (a x h), and one layer's full set
  is rebuilt during backward. HyperPod's offload_activations (with checkpointing) keeps
  activation_loading_horizon + 1 layer inputs on the device.
Peak. The largest of four moments, on top of the sharded parameters and optimizer state:
  the loss's backward (all saved activations, the loss tensors and the gathered root; gradients
  of this step do not exist yet unless gradient accumulation keeps the previous micro batches');
  the last layer's backward (the activations without the loss tensors, the layers in flight);
  under checkpointing, the first layers' backward (layer inputs, one rebuilt layer, the gathered
  weights and by then the gradients of every later layer, not yet the root's, which backward
  reaches last); the optimizer step (the gradients: the trainer's
  fused AdamW updates in place, with no temporary copy of the shard).
LoRA / QLoRA (model.peft.peft_type lora, qlora*). Base weights are frozen: fp32 and sharded as
  above (QLoRA: 4-bit NF4 with double quantisation, 0.516 bytes per decoder-layer weight), with no
  gradients or optimizer state. Adapters of rank model.peft.rank (default 16) sit on the decoder
  projections named by model.peft.target_modules (default q_proj and v_proj, peft's choice for
  Llama-like models; a projection counts when a target mentions its transformers name, so
  regular expressions over module paths work too, and when none is named every projection counts)
  and train in fp32 with AdamW; routed experts get no adapters. A frozen projection saves no input
  for backward (its weight gradient is never formed), so LoRA's activations are smaller than full
  training's: each RMSNorm keeps only its fp32 input (4h; its outputs feed frozen weights), the
  SwiGLU MLP keeps gate, up and act(gate) but not the down projection's input, attention is as
  above, and the adapters add, per group of targeted projections that read the same tensor (q/k/v:
  the first norm's output; gate/up: the second's; down: the product; o_proj reads SDPA's output,
  already kept), one copy of that input (with dropout, one per projection plus its mask: 1 byte
  per element from CUDA's fused dropout, a scaled-noise tensor in the compute dtype on CPU), and
  rank x a per projection for lora_A's output. The first layer's first norm reads the frozen
  embedding's output, so autograd keeps nothing for it. tests/test_memory.py checks these bytes
  against what autograd really saves.
Offload. model.cpu_offload moves the sharded parameters, gradients and optimizer state to the host.
Overhead. gpu: 1.0 GB (CUDA context and NCCL buffers); cpu: 0.4 GB (interpreter, torch and
  transformers loaded).

Checked against measurements (3 AdamW steps of transformers models, FSDP2 on one rank where bf16):
on an H200 (torch 2.11, transformers 5.17) a 1.2B Llama at seq 4096 in bf16 with and without
checkpointing, with mb 2 and with LoRA, in fp32 with and without checkpointing and with LoRA, and a
small Mixtral in bf16 and fp32 came out at 0.96 to 1.07 x the measured max_memory_allocated; on CPU
a 20M Llama in fp32 (tests/test_memory.py) within a few percent of the peak RSS growth.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapter.llmft import as_v1
from adapter.modelsize import Arch, Linear, ParamCounts, linears, param_counts
from adapter.numbers import positive_int
from hpctl import model_arch
from hpctl.devices import devices_per_node, recipe_of, uses_gpus

GB = 1e9
ADAM_BYTES = 8  # exp_avg and exp_avg_sq, fp32
NF4_BYTES = 0.516  # 4 bits + double-quantised absmax per 64 weights (bitsandbytes)
LOSS_BYTES_PER_LOGIT = 12  # fp32 log-softmax output, its gradient, the logits' gradient
OVERHEAD_GB = {"gpu": 1.0, "cpu": 0.4}
DEFAULT_LORA_TARGETS = ["q_proj", "v_proj"]  # peft's default for Llama, Mistral, Mixtral and Qwen2
MLP_NAMES = frozenset({"gate_proj", "up_proj", "down_proj"})


@dataclass(frozen=True)
class Layout:
    """How the job's processes split the work; shared with the pre-flight checks."""

    world: int
    tp: int
    ep: int
    cp: int
    dp: int
    shard: int  # FSDP shard group size
    strategy: str
    assumed: bool = False  # the trainer refuses the parallel keys: fully sharded over every data rank


def _int(value: Any, default: int) -> int:
    return positive_int(value) or default


def layout(spec_data: Mapping[str, Any]) -> Layout:
    """The job's split as the trainer makes it: its mesh comes from the trainer's own config
    (adapter.config.planned_mesh, the one owner of shard groups). A recipe whose parallel keys
    the trainer refuses (the plan says why) is estimated as fully sharded over every data rank."""
    from adapter.config import planned_mesh  # torch-free, as check_trainer imports it
    recipe = recipe_of(spec_data)
    model, trainer = recipe.get("model") or {}, recipe.get("trainer") or {}
    world = _int(trainer.get("num_nodes"), 1) * devices_per_node(spec_data)
    tp = _int(model.get("tensor_model_parallel_degree"), 1)
    ep = _int(model.get("expert_model_parallel_degree"), 1)
    cp = _int(model.get("context_parallel_degree"), 1)
    mesh = planned_mesh(recipe, world)  # under fault tolerance, one replica group's: FSDP shards within it
    dp = max(world // (tp * cp), 1)  # every data-parallel rank (of all replica groups: they split the batch)
    shard = mesh.fsdp_shards if mesh else dp * cp
    return Layout(world, tp, ep, cp, dp, shard, str(model.get("sharding_strategy") or "full_shard").lower(),
                  assumed=mesh is None)


def is_16bit(recipe: Mapping[str, Any]) -> bool:
    """Whether the trainer computes in bf16 (adapter.config.precision_of, the one owner of the
    spellings and the default); a precision it refuses counts as fp32."""
    from adapter.config import precision_of
    return precision_of(recipe) == "bf16"


@dataclass(frozen=True)
class MemoryEstimate:
    params_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    gathered_gb: float  # FSDP's all-gathered weights and unsharded gradients in flight
    overhead_gb: float
    total_gb: float
    device_memory_gb: float | None
    fraction: float | None  # total / device memory
    explain: str

    @property
    def known(self) -> bool:
        """False when the recipe gives no architecture to estimate from."""
        return self.total_gb > self.overhead_gb

    @property
    def tensors_gb(self) -> float:
        """The peak of live tensor bytes (what torch.cuda.max_memory_allocated reports)."""
        return self.total_gb - self.overhead_gb


@dataclass(frozen=True)
class _Lora:
    kind: str  # lora, qlora_4bit, ...
    rank: int
    targets: list[str] | None  # target module patterns; None for peft's default
    dropout: float
    gpu: bool  # CUDA's fused dropout keeps a 1-byte mask; the CPU's keeps its scaled noise tensor


def _lora(recipe: Mapping[str, Any], gpu: bool) -> _Lora | None:
    """The recipe's LoRA adapters as the trainer reads them (adapter.config.lora_of), or None
    when it trains every weight."""
    from adapter.config import lora_of  # torch-free, as check_trainer imports it
    cfg = lora_of(recipe)
    if cfg is None:
        return None
    targets = cfg.target_modules
    if isinstance(targets, str):  # "all-linear", or one regex: the names in it count
        targets = [targets]
    return _Lora("qlora_4bit" if cfg.quantize_base else "lora", cfg.rank, targets, cfg.dropout, gpu)


def _targeted(modules: list[Linear], targets: list[str] | None) -> list[Linear]:
    """Projections LoRA adapts: those whose name (q_proj, ...) a target mentions, so plain names
    and regular expressions over module paths both work; every projection when none is named."""
    named = {word for target in (targets or DEFAULT_LORA_TARGETS)
             for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(target))}
    dense = [m for m in modules if not m.expert]
    return [m for m in dense if m.name.rsplit(".", 1)[-1] in named] or dense


def _activation_bytes_per_token(a: Arch, dtype: int, tp: int, math_seq: int,
                                lora: _Lora | None = None) -> tuple[float, float, float]:
    """(one decoder layer without checkpointing, final norm, loss) in bytes per token.

    `math_seq`: the key length when attention runs SDPA's math kernel (fp32 probabilities of every
    head over every key are kept), 0 for the fused kernels that keep none. `lora`: the adapters
    when the base is frozen (its projections then save no inputs)."""
    norm = a.hidden * (4 + 2 * dtype) if lora is None else a.hidden * 4
    # Under LoRA the first layer's first norm reads the frozen embedding's output: autograd records nothing.
    norms = 2 * norm if lora is None else norm * (2 - 1 / max(a.layers, 1))
    q_dim = a.heads * a.head_dim
    if a.mla:
        kv_dim = a.heads * a.v_head_dim  # k and v are expanded per head
        latent = a.kv_lora_rank + a.qk_rope_head_dim + a.q_lora_rank
        attention = dtype * (2 * q_dim + 2 * kv_dim + latent) / tp
    else:
        kv_dim = a.kv_heads * a.head_dim
        attention = dtype * (2 * q_dim + 2 * kv_dim) / tp
    attention += 4 * a.heads * math_seq / tp
    swiglu = 4 if lora is None else 3  # a frozen down projection does not keep the product
    dense_mlp = dtype * swiglu * a.intermediate / tp
    moe_mlp = dtype * (a.top_k * (swiglu * a.moe_intermediate + 2 * a.hidden) + swiglu * a.shared_intermediate) / tp
    mlp = (dense_mlp * (a.layers - a.moe_layers) + moe_mlp * a.moe_layers) / max(a.layers, 1)
    adapters = _adapter_inputs(a, dtype, tp, lora) if lora is not None else 0.0
    return norms + attention + mlp + adapters, norm, LOSS_BYTES_PER_LOGIT * a.vocab


def _block(name: str) -> str:
    """Where a projection reads its input from: attention, or one MLP (dense or shared experts)."""
    prefix, _, last = name.rpartition(".")
    return f"{prefix}.mlp" if last in MLP_NAMES else f"{prefix}.attention"


def _adapter_inputs(a: Arch, dtype: int, tp: int, lora: _Lora) -> float:
    """Bytes per token per layer that LoRA's adapters keep for backward (see the docstring)."""
    targeted = _targeted(linears(a), lora.targets)
    per_layer = 0.0
    if lora.dropout:  # each projection's own dropout output and its mask
        mask = 1 if lora.gpu else dtype
        per_layer += sum((dtype + mask) * m.in_features * m.count for m in targeted)
    else:  # one copy per distinct input: same block and width means the same tensor
        groups = {(_block(m.name), m.in_features): m.count for m in targeted if not m.name.endswith("o_proj")}
        per_layer += sum(dtype * width * count for (_, width), count in groups.items())
    per_layer += sum(dtype * lora.rank * m.count for m in targeted)  # lora_A's outputs
    return per_layer / max(a.layers, 1) / tp


def estimate(spec_data: Mapping[str, Any], device_memory_gb: float | None,
             host_gpus: int | None = None) -> MemoryEstimate:
    """Peak memory of one training process (see the module docstring for every assumption).

    `spec_data` is a resolved spec's data (or a bare recipe); `device_memory_gb` the memory one
    process may use (None: unknown, then `fraction` is None); `host_gpus` the GPUs of a local
    job's machine, for hpctl.devices.uses_gpus (GPU or CPU runtime and kernels).
    """
    recipe = recipe_of(spec_data)
    translated = as_v1(recipe)  # an LLMFT recipe: the v1 recipe the trainer trains it as
    if translated is not None:
        spec_data, recipe = ({**spec_data, "recipes": translated} if "recipes" in spec_data else translated), translated
    model = recipe.get("model") or {}
    counts = param_counts(model_arch.fields(spec_data))  # the checkpoint's architecture where known
    accelerator = "gpu" if uses_gpus(spec_data, host_gpus) else "cpu"
    overhead = OVERHEAD_GB[accelerator]
    if not counts.total:
        return MemoryEstimate(0.0, 0.0, 0.0, 0.0, 0.0, overhead, overhead, device_memory_gb, None,
                              "no estimate: the recipe does not describe the model's architecture "
                              "(model.hidden_size, num_hidden_layers, vocab_size)")
    lay = layout(spec_data)
    mixed = is_16bit(recipe)
    dtype = 2 if mixed else 4
    w = _weights(counts, lay, _lora(recipe, accelerator == "gpu"))
    at_loss_b, gathered_b = _gathered(counts, lay, dtype, mixed, w.peft is not None)
    act_loss, loss_b, act_recompute = _activations(counts.arch, lay, model, dtype, accelerator == "gpu" and not mixed,
                                                   w.peft)

    accumulation, accumulation_assumed = _accumulation(model, lay)
    offload = bool(model.get("cpu_offload"))
    params_b, grads_b, optimizer_b = (0.0, 0.0, 0.0) if offload else (w.params, w.grads, w.optimizer)
    earlier = grads_b if accumulation > 1 else 0.0  # the previous micro batches' gradients
    # By the first layer's backward every later layer's gradient exists; the root's comes last.
    layer_grads_b = grads_b if accumulation > 1 else (0.0 if offload else w.layer_grads) * (1 - 1 / max(counts.arch.layers, 1))
    phases = [
        act_loss + at_loss_b + earlier,  # end of forward, loss backward
        act_loss - loss_b + gathered_b + earlier,  # the last layer's backward
        act_recompute + gathered_b + layer_grads_b,  # the first layers' backward under checkpointing
        grads_b,  # optimizer step (fused AdamW: in place)
    ]
    total = (params_b + optimizer_b + max(phases)) / GB + overhead
    fraction = total / device_memory_gb if device_memory_gb else None

    a = counts.arch
    parts = [
        f"{_count(counts.total)} params" + (f" ({_count(counts.active)} active)" if a.moe else ""),
        "bf16 mixed (fp32 master, grads, AdamW)" if mixed else "fp32",
        f"{lay.strategy} over {lay.shard}" + (f", tp {lay.tp}" if lay.tp > 1 else "")
        + (f", ep {lay.ep}" if lay.ep > 1 else "") + (f", cp {lay.cp}" if lay.cp > 1 else ""),
        f"{w.peft.kind} r{w.peft.rank}" if w.peft else None,
        f"mb {_int(model.get('train_batch_size'), 1)} x seq {_int(model.get('max_context_width'), 1)}",
        "AC on" if model.get("activation_checkpointing") else "AC off",
        "params/grads/optimizer offloaded to host" if offload else None,
        f"grad accumulation {accumulation}" if accumulation > 1 else None,
        "layout assumed fully sharded (the trainer refuses the parallel keys)" if lay.assumed else None,
        "accumulation assumed (the trainer refuses the batch sizes)" if accumulation_assumed else None,
    ]
    activations_b = max(act_loss, act_recompute)
    sums = (f"params {_size(params_b)} + grads {_size(grads_b)} + optimizer {_size(optimizer_b)}, "
            f"activations {_size(activations_b)} + gathered weights {_size(gathered_b)} at the peak, "
            f"runtime {_size(overhead * GB)}")
    where = f" of {_size(device_memory_gb * GB)} ({fraction:.0%})" if fraction is not None else ""
    explain = f"{_size(total * GB)} per device{where}: " + ", ".join(p for p in parts if p) + f"; {sums}"
    return MemoryEstimate(
        params_gb=params_b / GB,
        grads_gb=grads_b / GB,
        optimizer_gb=optimizer_b / GB,
        activations_gb=activations_b / GB,
        gathered_gb=gathered_b / GB,
        overhead_gb=overhead,
        total_gb=total,
        device_memory_gb=device_memory_gb,
        fraction=fraction,
        explain=explain,
    )


def _count(n: float) -> str:
    """A parameter count for people: 8.03B, 19.99M, 115.0K."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _size(nbytes: float) -> str:
    """Bytes for people, in GB down to 0.1 GB and in MB below: 95.5 GB, 0.28 GB, 12.3 MB."""
    if nbytes >= 10 * GB:
        return f"{nbytes / GB:.1f} GB"
    if nbytes >= 0.1 * GB:
        return f"{nbytes / GB:.2f} GB"
    return f"{nbytes / 1e6:.1f} MB"


@dataclass(frozen=True)
class _Weights:
    """Bytes per device of the sharded weights and what training keeps for them."""

    params: float
    grads: float
    optimizer: float
    layer_grads: float  # of the decoder layers only (the root's come last in backward)
    peft: _Lora | None


def _weights(counts: ParamCounts, lay: Layout, peft: _Lora | None) -> _Weights:
    a = counts.arch
    shard, expert_shard = lay.shard, max(lay.shard // lay.ep, 1)
    root = counts.embedding + counts.lm_head + counts.final_norm  # whole across tp
    layers = (counts.layers_total - counts.experts_total) / lay.tp
    experts = counts.experts_total / (lay.ep * lay.tp)
    if peft:
        adapted = _targeted(linears(a), peft.targets)
        trainable = sum(peft.rank * (m.in_features + m.out_features) * m.count for m in adapted) / lay.tp / shard
        base_bytes = NF4_BYTES if "qlora" in peft.kind else 4
        params = root * 4 / shard + (layers / shard + experts / expert_shard) * base_bytes + trainable * 4
        in_layers = trainable
    else:
        in_layers = layers / shard + experts / expert_shard
        trainable = root / shard + in_layers
        params = trainable * 4
    return _Weights(params, trainable * 4, trainable * ADAM_BYTES, in_layers * 4, peft)


def _gathered(counts: ParamCounts, lay: Layout, dtype: int, mixed: bool, peft: bool) -> tuple[float, float]:
    """Bytes FSDP holds unsharded (at the loss: the root; in the layers' backward: the root, two
    layers, and gradients on their way)."""
    if not mixed and lay.shard == 1:
        return 0.0, 0.0
    a = counts.arch
    layer = (counts.moe_layer_shared / lay.tp + counts.moe_expert * a.experts / (lay.ep * lay.tp)
             if a.moe else counts.dense_layer / lay.tp)
    root = counts.embedding + counts.lm_head + counts.final_norm
    zero2 = "grad_op" in lay.strategy or "zero2" in lay.strategy
    kept_layers = a.layers if zero2 else min(2, a.layers)
    at_loss = dtype * (root + a.layers * layer) if zero2 else 0.0  # zero2 reshards nothing after forward
    gathered = dtype * (root + kept_layers * layer)
    if not peft:  # the output projection's gradient waits for the root; one layer's in compute and fp32
        gathered += dtype * a.vocab * a.hidden + (dtype + 4) * layer
    return at_loss, gathered


def _activations(a: Arch, lay: Layout, model: Mapping[str, Any], dtype: int,
                 math_kernel: bool, lora: _Lora | None) -> tuple[float, float, float]:
    """Activation bytes of one micro batch: (end of forward, of which the loss tensors, last layer
    recomputed under checkpointing)."""
    seq = _int(model.get("max_context_width"), 1)
    tokens = _int(model.get("train_batch_size"), 1) * seq / lay.cp
    # SDPA's math kernel (fp32 with grouped-query attention on a GPU) keeps heads x seq probabilities.
    math_seq = seq if math_kernel and a.kv_heads < a.heads else 0
    per_layer, final_norm, loss = _activation_bytes_per_token(a, dtype, lay.tp, math_seq, lora)
    if not model.get("activation_checkpointing"):
        return tokens * (a.layers * per_layer + final_norm + loss), tokens * loss, 0.0
    kept = a.layers
    if model.get("offload_activations"):
        kept = min(a.layers, _int(model.get("activation_loading_horizon"), 1) + 1)
    inputs = kept * dtype * a.hidden
    backward_scores = 2 * 4 * a.heads * math_seq / lay.tp  # gradients of the probabilities and scores
    return tokens * (inputs + final_norm + loss), tokens * loss, tokens * (inputs + per_layer + backward_scores)


def _accumulation(model: Mapping[str, Any], lay: Layout) -> tuple[int, bool]:
    """(micro batches per optimizer step, whether assumed): the trainer's arithmetic
    (adapter.mesh.accumulation); for batch sizes it refuses (the plan says why), the nearest count
    below, at least 1, marked assumed."""
    from adapter.mesh import accumulation
    from adapter.reader import ConfigError
    global_batch = _int(model.get("global_batch_size"), 0)
    micro = _int(model.get("train_batch_size"), 1)
    if not global_batch:
        return 1, False
    try:
        return accumulation(global_batch, micro, lay.dp), False
    except ConfigError:
        return max(global_batch // (micro * lay.dp), 1), True
