"""`trainer.fault_tolerance`: replica-group fault tolerance (torchft), the rules of what the trainer accepts.

With it on, the job's processes are split into `replica_groups` equal groups. Each group is its
own torchrun world (FSDP2, and any tensor or context parallelism, inside it) and the groups are
the HSDP replicate dimension: they average gradients through torchft, a lighthouse tracks which
are alive, and a step commits when the live groups agree. A group that fails is restarted on its
own and takes the weights, optimizer and step from a live peer while the others keep stepping.

This module is the one owner of those rules: config.py reads them in one call, hpctl's plan asks
them through it with the world size it launches, and hpctl's launchers read the same values
(`FaultTolerance`) to start the lighthouse and the groups. Torch-free, like config.py.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from adapter.trainconfig import DEFAULT_LIGHTHOUSE_PORT, FaultTolerance, ParallelConfig

if TYPE_CHECKING:
    from adapter.reader import Reader

KEY = "trainer.fault_tolerance"
# Environment the launchers give each group's processes (the trainer reads them).
GROUP_ENV = "HPCTL_REPLICA_GROUP"
LIGHTHOUSE_ENV = "TORCHFT_LIGHTHOUSE"  # torchft's own name for the lighthouse address


def read(r: "Reader", parallel: "ParallelConfig", world: int | None) -> FaultTolerance | None:
    """The section, refusals recorded in `r` at their keys; None when it is absent or off.
    `world` (all groups' processes) adds the layout rules: the groups must split it evenly, and
    tensor or context parallelism (and an HSDP shard group) must stay inside one group."""
    if not r.bool(f"{KEY}.enabled", False):
        return None
    groups = r.int(f"{KEY}.replica_groups", minimum=2)
    if groups is None:
        r.refuse(f"{KEY}.replica_groups", "is required when fault tolerance is enabled (2 or more)",
                 "the job is split into this many replica groups, each restarted on its own")
        return None
    minimum = r.int(f"{KEY}.min_replicas", 1, minimum=1) or 1
    if minimum > groups:
        r.refuse(f"{KEY}.min_replicas", f"{minimum} is more than replica_groups ({groups})",
                 f"use 1..{groups}: a step commits when at least this many groups are live")
    ft = FaultTolerance(
        replica_groups=groups, min_replicas=minimum,
        lighthouse_port=r.int(f"{KEY}.lighthouse_port", DEFAULT_LIGHTHOUSE_PORT, minimum=1) or DEFAULT_LIGHTHOUSE_PORT,
        quorum_timeout_s=_or(r.float(f"{KEY}.quorum_timeout_s", 60.0), 60.0),
        timeout_s=_or(r.float(f"{KEY}.timeout_s", 30.0), 30.0),
        heartbeat_timeout_s=_or(r.float(f"{KEY}.heartbeat_timeout_s", 5.0), 5.0),
        max_restarts=_or(r.int(f"{KEY}.max_restarts", 3, minimum=0), 3),
    )
    if ft.lighthouse_port > 65535:
        r.refuse(f"{KEY}.lighthouse_port", f"{ft.lighthouse_port} is not a TCP port", "use 1..65535")
    for key in ("quorum_timeout_s", "timeout_s", "heartbeat_timeout_s"):
        if getattr(ft, key) <= 0:
            r.refuse(f"{KEY}.{key}", f"{getattr(ft, key)} must be positive", "seconds, e.g. 30")
    if 0 < ft.quorum_timeout_s <= ft.heartbeat_timeout_s:
        r.refuse(f"{KEY}.heartbeat_timeout_s",
                 f"{ft.heartbeat_timeout_s:g} s is not less than quorum_timeout_s ({ft.quorum_timeout_s:g} s)",
                 "the live groups' quorum would time out before the lighthouse drops a lost group, "
                 "so one loss would stop them all: keep it well under quorum_timeout_s (default 5)")
    if world is not None:
        _layout(r, ft, parallel, world)
    return ft


def mesh_world(ft: FaultTolerance | None, world: int) -> int:
    """The processes one trainer's device mesh spans: its replica group's (each group is its own
    torchrun world) under fault tolerance, else all `world`."""
    return ft.group_world(world) if ft else world


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _layout(r: "Reader", ft: FaultTolerance, p: "ParallelConfig", world: int) -> None:
    key, n = f"{KEY}.replica_groups", ft.replica_groups
    if world % n:
        r.refuse(key, f"{n} does not divide the world size {world} (trainer.devices x trainer.num_nodes)",
                 "every replica group runs the same number of processes: choose a divisor of the world size")
        return
    group = world // n
    inner = p.tp * p.cp
    if group % inner:
        what = "tensor" if p.cp == 1 else "tensor x context"
        r.refuse(key, f"{what} parallel ({inner} processes) would span replica groups of {group} processes",
                 "torchft replicates whole groups: tensor and context parallelism must fit inside one group")
        return
    if p.sharding_strategy in ("hybrid_shard", "_hybrid_shard_zero2") and p.shard_degree is not None:
        if n * p.shard_degree * p.tp != world:
            r.refuse(key, f"{n} x model.shard_degree ({p.shard_degree}) x tensor parallel ({p.tp}) is "
                     f"{n * p.shard_degree * p.tp}, not the world size {world}",
                     "the replica groups are the HSDP replicate dimension: set shard_degree to "
                     f"{group // p.tp} (one group's processes / tensor parallel), or drop it")


def summary(ft: FaultTolerance, world: int, lighthouse: str, restarts_by: str) -> str:
    """One line for the plan: the groups, where the lighthouse is, and what a failure does."""
    group = ft.group_world(world)
    return (f"{ft.replica_groups} replica groups x {group} process{'es' if group != 1 else ''} (torchft); "
            f"lighthouse at {lighthouse}, which drops a silent group after {ft.heartbeat_timeout_s:g} s; a failed group is restarted alone by {restarts_by} "
            f"(up to {ft.max_restarts} times) and heals from a live peer while the others keep stepping; "
            f"steps commit with >= {ft.min_replicas} live group{'s' if ft.min_replicas != 1 else ''}; "
            "checkpoints stay the backstop for losing every group")
