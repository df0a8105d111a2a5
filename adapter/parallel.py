"""Parallelism, in one place: the device mesh, tensor parallel plans, activation checkpointing,
torch.compile and FSDP2. No other module knows how the model is split.

The mesh has three named dimensions, row-major over the global ranks:
  dp_replicate x dp_shard x tp
from model.sharding_strategy / shard_degree (data parallel) and tensor_model_parallel_degree.
FSDP2 shards each decoder layer and then the root over (dp_replicate, dp_shard): one dimension is
plain FSDP, two is hybrid sharding (HSDP). Tensor parallelism splits attention heads and MLP
width (Mixtral: whole experts) over `tp`; the embedding and LM head stay replicated in tp.
"""
from __future__ import annotations

import types
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

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

from adapter.config import ConfigError, ParallelConfig

# transformers model_type values whose decoder layers have a tensor-parallel plan here.
TP_FAMILIES = ("llama", "mistral", "qwen2", "mixtral")


@dataclass(frozen=True)
class MeshShape:
    replicate: int
    shard: int
    tp: int

    @property
    def dp(self) -> int:
        return self.replicate * self.shard


def mesh_shape(p: ParallelConfig, world: int) -> MeshShape:
    """The (dp_replicate, dp_shard, tp) shape for this world size, or a ConfigError saying why not."""
    if world % p.tp:
        raise ConfigError("model.tensor_model_parallel_degree", f"{p.tp} does not divide the world size {world}")
    dp = world // p.tp
    if p.sharding_strategy == "no_shard":
        return MeshShape(dp, 1, p.tp)
    if p.sharding_strategy in ("full_shard", "shard_grad_op"):
        return MeshShape(1, dp, p.tp)
    shard = p.shard_degree or dp
    if shard > dp or dp % shard:
        raise ConfigError("model.shard_degree", f"{shard} must divide the data-parallel size {dp} "
                          f"(world {world} / tensor parallel {p.tp})", "set model.shard_degree to a divisor of it")
    return MeshShape(dp // shard, shard, p.tp)


@dataclass
class Layout:
    """This rank's place in the mesh, and the groups the training loop needs."""

    shape: MeshShape
    mesh: DeviceMesh
    dp_group: Any  # the ranks holding the same tensor-parallel slice: loss and token counts reduce here
    dp_rank: int

    @property
    def fsdp_mesh(self) -> DeviceMesh:
        return self.mesh["dp_shard"] if self.shape.replicate == 1 else self.mesh["dp_replicate", "dp_shard"]

    @property
    def tp_mesh(self) -> DeviceMesh:
        return self.mesh["tp"]


def build_layout(shape: MeshShape, device_type: str) -> Layout:
    mesh = init_device_mesh(device_type, (shape.replicate, shape.shard, shape.tp),
                            mesh_dim_names=("dp_replicate", "dp_shard", "tp"))
    # Ranks are row-major, so data-parallel peers share rank % tp.
    dp_group, _ = dist.new_subgroups_by_enumeration(
        [list(range(t, shape.dp * shape.tp, shape.tp)) for t in range(shape.tp)])
    return Layout(shape=shape, mesh=mesh, dp_group=dp_group, dp_rank=dist.get_rank() // shape.tp)


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
    return layout.shape.dp * layout.shape.tp > 1 or p.precision == "bf16" or p.cpu_offload


def set_gradient_sync(model: nn.Module, enabled: bool) -> None:
    """Reduce gradients only on the last micro-batch of a step (FSDP2); a plain module has nothing to sync."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)


def parallelize(model: nn.Module, layout: Layout, p: ParallelConfig, config: Any) -> None:
    """Apply tensor parallelism, activation checkpointing, compile and FSDP2 (where `wraps_fsdp`),
    in that order, in place."""
    layers = decoder_layers(model)
    if layout.shape.tp > 1:
        _check_tp(config, layout.shape.tp)
        for layer in layers:
            _tensor_parallel(layer, layout.tp_mesh, config)
    for index, layer in enumerate(layers):
        if p.activation_checkpointing:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
            layer = checkpoint_wrapper(layer)
        if p.compile:
            layer.compile()
        layers.register_module(str(index), layer)
    if not wraps_fsdp(layout, p):
        return

    mixed = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
             if p.precision == "bf16" else MixedPrecisionPolicy())
    options = dict(mesh=layout.fsdp_mesh, mp_policy=mixed,
                   offload_policy=CPUOffloadPolicy() if p.cpu_offload else OffloadPolicy(),
                   reshard_after_forward=p.sharding_strategy not in ("shard_grad_op", "_hybrid_shard_zero2"))
    for layer in layers:
        fully_shard(layer, **options)
    fully_shard(model, **options)


def _check_tp(config: Any, tp: int) -> None:
    family = getattr(config, "model_type", "")
    if family not in TP_FAMILIES:
        raise ConfigError("model.tensor_model_parallel_degree",
                          f"tensor parallelism is implemented for {', '.join(TP_FAMILIES)} models, not {family}",
                          "set it to 1 and let FSDP shard the model")
    sizes = {"num_attention_heads": config.num_attention_heads, "num_key_value_heads": config.num_key_value_heads}
    if family == "mixtral":
        sizes["num_local_experts"] = config.num_local_experts
    else:
        sizes["intermediate_size"] = config.intermediate_size
    for key, size in sizes.items():
        if size % tp:
            raise ConfigError("model.tensor_model_parallel_degree", f"{tp} does not divide model.{key} ({size})")


def _tensor_parallel(layer: nn.Module, tp_mesh: DeviceMesh, config: Any) -> None:
    """Megatron-style plan: q/k/v and gate/up split by output columns, o/down by input rows, so each
    block needs one all-reduce forward and one backward. Mixtral splits the experts instead."""
    plan: dict[str, ParallelStyle] = {
        "self_attn.q_proj": ColwiseParallel(), "self_attn.k_proj": ColwiseParallel(),
        "self_attn.v_proj": ColwiseParallel(), "self_attn.o_proj": RowwiseParallel(),
    }
    if config.model_type == "mixtral":
        plan["mlp.experts"] = ExpertSharded()
    else:
        plan.update({"mlp.gate_proj": ColwiseParallel(), "mlp.up_proj": ColwiseParallel(),
                     "mlp.down_proj": RowwiseParallel()})
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
