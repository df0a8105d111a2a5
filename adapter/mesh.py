"""The device mesh and gradient accumulation: how a world of processes splits one recipe's work.

parallel.py builds the torch mesh from `mesh_shape`; v1.py refuses a recipe whose degrees or batch
do not divide; hpctl's memory estimate asks `config.planned_mesh`, which asks this. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

from adapter.architectures import CP
from adapter.reader import ConfigError
from adapter.trainconfig import ParallelConfig, TrainConfig


@dataclass(frozen=True)
class MeshShape:
    """The device mesh dp_replicate x dp_shard x cp x tp, row-major over the global ranks."""

    replicate: int
    shard: int
    tp: int
    cp: int = 1

    @property
    def dp(self) -> int:
        """Data-parallel size: how many different batches a micro-step reads (cp ranks share one)."""
        return self.replicate * self.shard

    @property
    def fsdp_shards(self) -> int:
        """How many pieces FSDP2 cuts each parameter into: dp_shard x cp (context-parallel ranks
        hold the same weights, so they shard them too, as torchtitan does)."""
        return self.shard * self.cp


def mesh_shape(p: ParallelConfig, world: int) -> MeshShape:
    """The (dp_replicate, dp_shard, cp, tp) shape for this world size, or a ConfigError saying why
    not. parallel.py builds the device mesh from it; hpctl asks it at plan time with the planned
    world. model.shard_degree counts FSDP's shard group, dp_shard x cp, as HyperPod's does."""
    if world % p.tp:
        raise ConfigError("model.tensor_model_parallel_degree",
                          f"{p.tp} does not divide the world size {world} (trainer.devices x trainer.num_nodes)",
                          "choose a tensor-parallel degree that divides the number of processes")
    if world % (p.tp * p.cp):
        raise ConfigError(CP, f"{p.cp} x tensor_model_parallel_degree ({p.tp}) does not divide the world size "
                          f"{world} (trainer.devices x trainer.num_nodes)",
                          "choose degrees whose product divides the number of processes")
    dp = world // (p.tp * p.cp)
    if p.sharding_strategy == "no_shard":
        return MeshShape(dp, 1, p.tp, p.cp)
    if p.sharding_strategy in ("full_shard", "shard_grad_op"):
        return MeshShape(1, dp, p.tp, p.cp)
    group = dp * p.cp
    shard = p.shard_degree or group
    if shard > group or group % shard or shard % p.cp:
        within = f"data-parallel size {dp}" if p.cp == 1 else f"data-parallel x context-parallel size {group}"
        cp_rule = "" if p.cp == 1 else f" and be a multiple of context_parallel_degree ({p.cp})"
        raise ConfigError("model.shard_degree", f"{shard} must divide the {within} "
                          f"(world {world} / tensor parallel {p.tp}{'' if p.cp == 1 else f' / context parallel {p.cp}'})"
                          f"{cp_rule}", "set model.shard_degree to such a divisor")
    return MeshShape(group // shard, shard // p.cp, p.tp, p.cp)


def accumulation(global_batch: int, micro: int, dp_size: int, micro_key: str = "model.train_batch_size") -> int:
    """Micro-batches per optimizer step; `micro_key` is what the message calls the micro batch."""
    per_step = micro * dp_size
    if global_batch % per_step:
        lower = global_batch // per_step * per_step
        nearest = f"{lower} or {lower + per_step}" if lower else str(per_step)
        raise ConfigError("model.global_batch_size",
                          f"{global_batch} is not a multiple of {micro_key} x data-parallel size "
                          f"({micro} x {dp_size} = {per_step})", f"nearest valid: {nearest}")
    return global_batch // per_step


def grad_accumulation(cfg: TrainConfig, dp_size: int) -> int:
    """Micro-batches per optimizer step so that micro x dp x accumulation = global batch."""
    if cfg.global_batch is None:
        return 1
    return accumulation(cfg.global_batch, cfg.micro_batch, dp_size)
