"""Parallelism, in one place: the device mesh, tensor parallel plans, activation checkpointing,
torch.compile and FSDP2. No other module knows how the model is split.

The mesh has four named dimensions, row-major over the global ranks:
  dp_replicate x dp_shard x cp x tp
from model.sharding_strategy / shard_degree (data parallel), context_parallel_degree and
tensor_model_parallel_degree. FSDP2 shards each decoder layer and then the root over
(dp_replicate, dp_shard x cp): one dimension is plain FSDP, two is hybrid sharding (HSDP); the cp
ranks of a group read the same batch, each holding 2 chunks of every sequence, and ring attention
(torch's context_parallel, see sequence_shards) lets their queries see each other's keys. Tensor
parallelism splits attention heads and MLP width (Mixtral: whole experts) over `tp`; the embedding
and LM head stay replicated in tp.

fp8 (torchao float8 training, tensorwise dynamic scaling) swaps the decoder layers' Linears for
torchao's Float8Linear before anything else, so TP uses torchao's float8 styles and FSDP2
all-gathers the weights in float8. torchao is imported only when fp8 is on.
"""
from __future__ import annotations

import contextlib
import types
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import (CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy,
                                    fully_shard)
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (ColwiseParallel, ParallelStyle, RowwiseParallel,
                                               parallelize_module)

from adapter import qlora
from adapter.architectures import cp_problems, tp_problems
from adapter.mesh import MeshShape, mesh_shape  # noqa: F401 - mesh_shape is re-exported
from adapter.reader import ConfigError
from adapter.trainconfig import ParallelConfig
from adapter.v1 import cp_without_cuda

DIMS = ("dp_replicate", "dp_shard", "cp", "tp")


@dataclass
class Layout:
    """This rank's place in the mesh, and the groups the training loop needs."""

    shape: MeshShape
    mesh: DeviceMesh
    dp_group: Any  # ranks reading different batches (same cp and tp place): the batch's token counts reduce here
    dp_rank: int  # which batch this rank reads; the cp ranks of a group read the same one
    loss_group: Any = None  # ranks holding different tokens (dp x cp, same tp place): loss sums reduce here; None: dp_group
    shard_cp_mesh: DeviceMesh | None = None  # dp_shard x cp flattened, FSDP2's shard dimension when cp > 1

    @property
    def token_group(self) -> Any:
        return self.dp_group if self.loss_group is None else self.loss_group

    @property
    def fsdp_mesh(self) -> DeviceMesh:
        if self.shard_cp_mesh is None:
            return self.mesh["dp_shard"] if self.shape.replicate == 1 else self.mesh["dp_replicate", "dp_shard"]
        if self.shape.replicate == 1:
            return self.shard_cp_mesh
        # HSDP over (dp_replicate, dp_shard x cp), from the flattened mesh itself: torch deprecates
        # slicing flattened dimensions out of the root mesh
        return DeviceMesh._concatenate([self.mesh["dp_replicate"], self.shard_cp_mesh])

    @property
    def tp_mesh(self) -> DeviceMesh:
        return self.mesh["tp"]

    @property
    def cp_mesh(self) -> DeviceMesh:
        return self.mesh["cp"]


def rank_coords(shape: MeshShape, rank: int) -> dict[str, int]:
    """This rank's index along each mesh dimension (row-major, as init_device_mesh lays them out)."""
    coords = {}
    for name, size in reversed(list(zip(DIMS, (shape.replicate, shape.shard, shape.cp, shape.tp)))):
        coords[name] = rank % size
        rank //= size
    return {name: coords[name] for name in DIMS}


def peer_groups(shape: MeshShape, across: tuple[str, ...]) -> list[list[int]]:
    """Every group of ranks that differ only along the `across` dimensions: data-parallel peers
    are ("dp_replicate", "dp_shard"); the ranks holding different tokens add "cp"."""
    world = shape.dp * shape.cp * shape.tp
    groups: dict[tuple[int, ...], list[int]] = {}
    for rank in range(world):
        coords = rank_coords(shape, rank)
        groups.setdefault(tuple(v for k, v in coords.items() if k not in across), []).append(rank)
    return list(groups.values())


def check_device(shape: MeshShape, device_type: str) -> None:
    """Ring attention needs CUDA's attention kernels; a CPU run with cp > 1 (accelerator auto on a
    machine without GPUs: v1.py refuses accelerator cpu) stops before any work."""
    if shape.cp > 1 and device_type != "cuda":
        raise cp_without_cuda(shape.cp)


def build_layout(shape: MeshShape, device_type: str) -> Layout:
    """The mesh and groups; any device type (the mesh logic is tested on CPU), see check_device."""
    mesh = init_device_mesh(device_type, (shape.replicate, shape.shard, shape.cp, shape.tp), mesh_dim_names=DIMS)
    dp_group, _ = dist.new_subgroups_by_enumeration(peer_groups(shape, ("dp_replicate", "dp_shard")))
    loss_group = shard_cp = None
    if shape.cp > 1:
        shard_cp = mesh["dp_shard", "cp"]._flatten("dp_shard_cp")  # FSDP2's shard dimension (torchtitan's layout)
        loss_group, _ = dist.new_subgroups_by_enumeration(peer_groups(shape, ("dp_replicate", "dp_shard", "cp")))
    return Layout(shape=shape, mesh=mesh, dp_group=dp_group, dp_rank=dist.get_rank() // (shape.cp * shape.tp),
                  loss_group=loss_group, shard_cp_mesh=shard_cp)


@contextlib.contextmanager
def sequence_shards(layout: Layout, tensors: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Context parallelism around one micro-batch's forward and backward: `tensors` ([batch, seq]
    each: input ids, labels, position ids) are cut in place to this rank's two chunks of every
    sequence (torch's head-tail load balancing: chunk i and 2 cp - 1 - i of 2 cp), and SDPA
    becomes ring attention over the cp ranks while the block runs. Without cp, nothing changes."""
    if layout.shape.cp == 1:
        yield tensors
        return
    from torch.distributed.tensor.experimental import context_parallel
    with context_parallel(layout.cp_mesh, buffers=tensors, buffer_seq_dims=[1] * len(tensors),
                          no_restore_buffers=set(tensors)):
        yield tensors


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder layers (found by name, so peft wrapping does not matter):
    `layers`, or `h` in GPT-style models such as Falcon."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (name.endswith("layers") or name.rpartition(".")[2] == "h"):
            return module
    raise ValueError(f"{type(model).__name__} has no decoder layer list")


def wraps_fsdp(layout: Layout, p: ParallelConfig) -> bool:
    """Whether FSDP2 wraps the model: the fastest correct mode for the world size, decided here.

    One process in fp32 without offload trains the plain module: there FSDP2 would shard over a
    single rank, i.e. add per-layer hooks, a copy of every parameter at each all-gather and each
    gradient's reduce-scatter, and DTensor dispatch in the optimizer and clipping, for the same
    math. bf16 keeps FSDP2 (its MixedPrecisionPolicy is the bf16 path), and so does CPU offload."""
    return layout.shape.dp * layout.shape.cp * layout.shape.tp > 1 or p.precision == "bf16" or p.cpu_offload


def set_gradient_sync(model: nn.Module, enabled: bool) -> None:
    """Reduce gradients only on the last micro-batch of a step (FSDP2); a plain module has nothing to sync."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)


def block_lists(model: nn.Module) -> list[nn.ModuleList]:
    """Every list of transformer blocks: the decoder's, and a vision-language model's vision
    encoder ones (Mllama: vision `transformer.layers`, `global_transformer.layers`)."""
    return [module for name, module in model.named_modules()
            if isinstance(module, nn.ModuleList) and (name.endswith("layers") or name.rpartition(".")[2] == "h")]


def parallelize(model: nn.Module, layout: Layout, p: ParallelConfig, config: Any) -> list[str]:
    """Apply fp8, tensor parallelism, activation checkpointing, compile, activation offloading and
    FSDP2, in that order, in place, to every list of transformer blocks (fp8, tensor parallelism
    and offloading to the decoder's). Returns notes for the log (what fp8 and offloading did)."""
    notes = []
    layers = decoder_layers(model)
    if p.fp8:
        _check_fp8_device(layout.mesh.device_type)
        sharded = layout.shape.fsdp_shards > 1
        converted = _float8(layers, fsdp_all_gather=sharded)
        notes.append(f"fp8: {converted} Linear layers train in float8 (torchao, {p.fp8} dynamic scaling, "
                     f"float8 all-gather {'on' if sharded else 'off: parameters are not sharded'})")
    _check_architecture(config, layout.shape)
    if layout.shape.tp > 1:  # decoder layers only: embed_tokens and lm_head stay whole on each tp rank (any vocab size)
        for layer in layers:
            _tensor_parallel(layer, layout.tp_mesh, config, float8=p.fp8 is not None)
    offloader = None
    if p.offload_activations:
        if layout.mesh.device_type == "cuda":
            from adapter.offload import ActivationOffloader
            offloader = ActivationOffloader(torch.device("cuda", torch.cuda.current_device()),
                                            p.activation_loading_horizon)
            notes.append(f"offload_activations: saved activations go to pinned host memory, "
                         f"{p.activation_loading_horizon} layer(s) prefetched ahead in backward")
        else:
            notes.append("offload_activations: nothing to do on a CPU run (activations already live in host memory)")
    blocks = block_lists(model)
    for block_list in blocks:
        for index, layer in enumerate(block_list):
            if p.activation_checkpointing:
                from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
                layer = checkpoint_wrapper(layer)
            if p.compile:
                layer.compile()
            if offloader is not None and block_list is layers:  # outside compile: the hooks run eagerly
                from adapter.offload import OffloadActivations
                layer = OffloadActivations(layer, offloader, index)
            block_list.register_module(str(index), layer)
    if not wraps_fsdp(layout, p):
        return notes

    mixed = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
             if p.precision == "bf16" else MixedPrecisionPolicy())
    # torch's one-rank FSDP2 path cannot unshard a tensor subclass with several all-gather inputs
    # (QLoRA's NF4 weights): with nothing to shard them over, they stay whole, outside FSDP.
    ignored = {w for w in model.parameters() if qlora.is_nf4(w)} if layout.fsdp_mesh.size() == 1 else None
    options = dict(mesh=layout.fsdp_mesh, mp_policy=mixed,
                   offload_policy=CPUOffloadPolicy() if p.cpu_offload else OffloadPolicy(),
                   reshard_after_forward=p.sharding_strategy not in ("shard_grad_op", "_hybrid_shard_zero2"),
                   ignored_params=ignored or None)
    for layer in (layer for block_list in blocks for layer in block_list):
        fully_shard(layer, **options)
    fully_shard(model, **options)
    return notes


def _float8_eligible(module: nn.Module, name: str) -> bool:
    """Linears whose GEMMs fp8 hardware takes (both dimensions multiples of 16); not LoRA adapters
    (rank-sized and trained in full precision) nor MoE routers (small, and precision-sensitive)."""
    return (isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0
            and "lora_" not in name and not name.endswith(("gate", "router")))


def _check_fp8_device(device_type: str) -> None:
    """float8 matmuls need fp8 tensor cores (SM 8.9+: L4, H100, H200) on a GPU; the CPU build of
    torch runs them in software."""
    if device_type == "cuda" and torch.cuda.get_device_capability() < (8, 9):
        name, (major, minor) = torch.cuda.get_device_name(), torch.cuda.get_device_capability()
        raise ConfigError("model.fp8", f"float8 training needs a GPU with fp8 tensor cores (compute capability "
                          f"8.9 or later, e.g. H100); this is {name} ({major}.{minor})", "set model.fp8: false")


def _float8(layers: nn.ModuleList, fsdp_all_gather: bool) -> int:
    """torchao float8 training on the decoder layers' Linears (the embedding and LM head stay in
    full precision): tensorwise dynamic scaling, with FSDP2 all-gathering float8 weights when the
    parameters are sharded. Returns how many Linears were converted."""
    from adapter.quiet import filter_noise
    filter_noise()  # torchao reports each of its CUDA extensions that a CPU build cannot load; none is used here
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    from torchao.float8.float8_linear import Float8Linear
    config = Float8LinearConfig(enable_fsdp_float8_all_gather=fsdp_all_gather)
    for layer in layers:
        convert_to_float8_training(layer, config=config, module_filter_fn=_float8_eligible)
    return sum(isinstance(m, Float8Linear) for m in layers.modules())


def _check_architecture(config: Any, shape: MeshShape) -> None:
    """The plan-time rules (architectures.tp_problems, cp_problems) again on the built config: a
    checkpoint's config.json is only read here."""
    model_type, sizes = getattr(config, "model_type", ""), config.to_dict()
    problems = tp_problems(model_type, sizes, shape.tp) + cp_problems(model_type, sizes, shape.cp)
    if problems:
        raise problems[0]


def _tensor_parallel(layer: nn.Module, tp_mesh: DeviceMesh, config: Any, float8: bool = False) -> None:
    """Megatron-style plan: q/k/v and gate/up split by output columns, o/down by input rows, so each
    block needs one all-reduce forward and one backward. Mixtral splits the experts instead. With
    fp8, torchao's float8 styles cast the inputs of its Float8Linears to float8 before they are
    distributed."""
    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    float8_styles: dict[str, type[ParallelStyle]] = {}
    if float8:
        from torchao.float8.float8_linear import Float8Linear
        from torchao.float8.float8_tensor_parallel import Float8ColwiseParallel, Float8RowwiseParallel
        float8_styles = {"colwise": Float8ColwiseParallel, "rowwise": Float8RowwiseParallel}

    def style(name: str, kind: str) -> ParallelStyle:
        if float8_styles and isinstance(layer.get_submodule(name), Float8Linear):
            return float8_styles[kind]()
        return styles[kind]()

    kinds = {"self_attn.q_proj": "colwise", "self_attn.k_proj": "colwise", "self_attn.v_proj": "colwise",
             "self_attn.o_proj": "rowwise"}
    if config.model_type != "mixtral":
        kinds.update({"mlp.gate_proj": "colwise", "mlp.up_proj": "colwise", "mlp.down_proj": "rowwise"})
    plan: dict[str, ParallelStyle] = {name: style(name, kind) for name, kind in kinds.items()}
    if config.model_type == "mixtral":
        plan["mlp.experts"] = ExpertSharded()
    parallelize_module(layer, tp_mesh, plan)


class ExpertSharded(ParallelStyle):
    """Tensor parallelism for a fused-experts module (transformers' MixtralExperts): each tp rank
    holds num_experts / tp whole experts and runs the tokens routed to them; the partial outputs
    are summed across tp. Inputs arrive replicated, so their gradients are summed likewise."""

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        for name, param in list(module.named_parameters(recurse=False)):
            module.register_parameter(name, nn.Parameter(distribute_tensor(param, device_mesh, [Shard(0)])))
        module._tp_mesh = device_mesh
        module.forward = types.MethodType(_local_experts_forward, module)
        return module


def _local_experts_forward(self: nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                           top_k_weights: torch.Tensor) -> torch.Tensor:
    mesh: DeviceMesh = self._tp_mesh

    def replicated_input(t: torch.Tensor) -> torch.Tensor:
        return DTensor.from_local(t, mesh, [Replicate()], run_check=False).to_local(grad_placements=[Partial()])

    x, weights = replicated_input(hidden_states), replicated_input(top_k_weights)
    gate_up, down = self.gate_up_proj.to_local(), self.down_proj.to_local()
    first = mesh.get_local_rank() * gate_up.shape[0]
    out = torch.zeros_like(x)
    for e in range(gate_up.shape[0]):
        token_idx, k_pos = torch.where(top_k_index == first + e)
        if token_idx.numel() == 0:
            continue
        gate, up = F.linear(x[token_idx], gate_up[e]).chunk(2, dim=-1)
        h = F.linear(self.act_fn(gate) * up, down[e]) * weights[token_idx, k_pos, None]
        out.index_add_(0, token_idx, h.to(out.dtype))
    return DTensor.from_local(out, mesh, [Partial()]).redistribute(mesh, [Replicate()]).to_local()


def copy_full_into(param: torch.Tensor, full: torch.Tensor) -> None:
    """Write this rank's shard of `full` (the whole parameter) into `param`, whatever its layout."""
    if qlora.is_nf4(param._local_tensor if isinstance(param, DTensor) else param):  # QLoRA: quantized whole, then cut
        qlora.copy_full_into(param, full)
        return
    if isinstance(param, DTensor):
        mesh = param.device_mesh
        full = full.to(mesh.device_type, param.dtype)  # reshard on the mesh device; the shard may be offloaded
        local = (DTensor.from_local(full, mesh, [Replicate()] * mesh.ndim, run_check=False)
                 .redistribute(mesh, param.placements).to_local())
        param.to_local().copy_(local)
    else:
        param.copy_(full)


def clip_grad_norm_(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """The global L2 norm of the gradients (clipped to max_norm when > 0).

    Gradients may live on different meshes (tp-sharded DTensors beside dp-only ones), which
    torch's clip_grad_norm_ cannot mix, so norms are taken per (mesh, placements) group."""
    params = [p for p in params if p.grad is not None]
    groups: dict[Any, list[torch.Tensor]] = defaultdict(list)
    for p in params:
        g = p.grad
        groups[(g.device_mesh, g.placements) if isinstance(g, DTensor) else None].append(g)
    total_sq = None
    for grads in groups.values():
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
        total_sq = norm.float() ** 2 if total_sq is None else total_sq + norm.float() ** 2
    total = total_sq.sqrt() if total_sq is not None else torch.zeros(())
    if max_norm > 0 and params:
        # As torch's clip_grad_norm_: a tensor coefficient, no host sync (x * 1.0 is exact).
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for grads in groups.values():
            torch._foreach_mul_(grads, coef.to(grads[0].device))
    return total
