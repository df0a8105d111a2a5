"""Crash injection for the reliability tests: one environment variable, read here and nowhere else.

HPCTL_CRASH_AT=POINT@STEP[@RANK] makes the process SIGKILL itself (no cleanup, no flush, as the
OOM killer or a lost node would) at POINT of step STEP, on rank RANK or on every rank:

  step      right after step STEP's optimizer update, before its checkpoint is due
  shards    in the checkpoint save of step STEP, once this rank's data files are written
  metadata  in that save, before the coordinator (rank 0) writes .metadata
  commit    .metadata written, before rank 0 writes the COMMITTED marker

A requeued Slurm job (SLURM_RESTART_COUNT > 0) is not crashed again, so auto-resume can finish.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

VARIABLE = "HPCTL_CRASH_AT"
POINTS = ("step", "shards", "metadata", "commit")


def _armed() -> tuple[str, int, int | None] | None:
    value = os.environ.get(VARIABLE)
    if not value or int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        return None
    point, step, *rank = value.split("@")
    if point not in POINTS:
        raise ValueError(f"{VARIABLE}={value}: the point must be one of {', '.join(POINTS)}")
    return point, int(step), int(rank[0]) if rank else None


def crash_if(point: str, step: int) -> None:
    """SIGKILL this process when HPCTL_CRASH_AT names this point, step and rank."""
    armed = _armed()
    if armed is None or armed[:2] != (point, step):
        return
    if armed[2] is not None and armed[2] != int(os.environ.get("RANK", "0")):
        return
    print(f"adapter: {VARIABLE}: SIGKILL at {point} of step {step}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def storage_writer(path: Path, step: int) -> Any:
    """A DCP writer that crashes at `shards` or `metadata` of this step; None (DCP's own) otherwise."""
    armed = _armed()
    if armed is None or armed[0] not in ("shards", "metadata") or armed[1] != step:
        return None
    from torch.distributed.checkpoint import FileSystemWriter

    class CrashingWriter(FileSystemWriter):
        def write_data(self, plan: Any, planner: Any) -> Any:
            future = super().write_data(plan, planner)
            future.wait()
            crash_if("shards", step)
            return future

        def finish(self, metadata: Any, results: Any) -> None:
            crash_if("metadata", step)
            super().finish(metadata, results)

    return CrashingWriter(str(path))
