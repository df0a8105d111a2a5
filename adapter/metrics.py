"""Per-step metrics, written by rank 0 as JSONL (`<results_dir>/metrics.jsonl`, read by `hpctl
status`), one line to stdout, TensorBoard scalars when exp_manager.create_tensorboard_logger, and
MLflow / W&B through tracking.py when the recipe asks for them.

A record holds: step, max_steps, loss (full float precision, so runs compare exactly), grad_norm,
lr, tokens_per_s (global), tokens_per_s_per_device, tflops_per_device (achieved, also on CPU),
mfu (when the device's peak is known: trainer.peak_tflops, else the table below), memory_gb (GPU
max allocated, CPU peak RSS), step_time_s and data_wait_s (means over the steps since the last
record), val_loss on validation steps, and for DPO
chosen_reward, rejected_reward, reward_margin and reward_accuracy (dpo.py).
FLOPs per token come from the architecture (adapter.modelsize, torch-free): 6 x active matmul
parameters + attention, i.e. what a full training step costs (LoRA's frozen weights are counted).
"""
from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import torch

# Dense bf16 peak TFLOP/s per device, matched as a substring of torch.cuda.get_device_name().
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "H20": 148.0, "B200": 2250.0, "GB200": 2450.0,
               "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
               "V100": 125.0, "T4": 65.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def throughput(tokens: int, seconds: float, world: int, flops_per_token: float, peak: float | None) -> dict[str, Any]:
    per_device = tokens / seconds / world
    achieved = flops_per_token * per_device / 1e12
    return {"tokens_per_s": tokens / seconds, "tokens_per_s_per_device": per_device,
            "tflops_per_device": achieved, "mfu": achieved / peak if peak else None}


class Window:
    """The steps since the last logged one. A record's step_time_s and data_wait_s are their mean,
    so logging every n steps (one host sync per n steps) still reports every step's cost."""

    def __init__(self) -> None:
        self.steps, self.seconds, self.data_wait = 0, 0.0, 0.0

    def add(self, seconds: float, data_wait: float) -> None:
        self.steps, self.seconds, self.data_wait = self.steps + 1, self.seconds + seconds, self.data_wait + data_wait

    def take(self) -> tuple[float, float]:
        """(mean step seconds, mean data wait) of the window, which starts over."""
        out = (self.seconds / self.steps, self.data_wait / self.steps)
        self.steps, self.seconds, self.data_wait = 0, 0.0, 0.0
        return out


class MetricsLog:
    """Rank 0 writes; other ranks hold a no-op logger. On resume, records after the resumed step
    (from an attempt that died before its next checkpoint) are dropped so each step appears once."""

    def __init__(self, results_dir: Path, rank: int, tensorboard_dir: Path | None, resumed_step: int,
                 tracker: Any = None) -> None:
        self.enabled = rank == 0
        self.writer = None
        self.tracker = tracker  # tracking.Tracker: sends in the background, never blocks
        if not self.enabled:
            return
        results_dir.mkdir(parents=True, exist_ok=True)
        self.path = results_dir / "metrics.jsonl"
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resumed_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=str(tensorboard_dir))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        print(_line(record), flush=True)
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "max_steps"):
                    self.writer.add_scalar(f"train/{key}" if key != "val_loss" else "val/loss", value, record["step"])
            self.writer.flush()
        if self.tracker is not None:
            self.tracker.log(record)

    def close(self, failed: bool = False) -> None:
        """Once: `failed` (training raised) marks the tracking runs failed rather than stopped."""
        if self.enabled:
            self.enabled = False
            self.file.close()
            if self.writer is not None:
                self.writer.close()
            if self.tracker is not None:
                self.tracker.finish(failed=failed)


def _line(r: dict[str, Any]) -> str:
    parts = [f"step {r['step']}/{r['max_steps']}", f"loss {r['loss']!r}", f"grad_norm {r['grad_norm']:.4g}",
             f"lr {r['lr']:.3e}", f"tokens/s {r['tokens_per_s']:.0f}", f"tflops/dev {r['tflops_per_device']:.3g}"]
    if r.get("mfu") is not None:
        parts.append(f"mfu {100 * r['mfu']:.1f}%")
    parts += [f"mem {r['memory_gb']:.2f}GB", f"step {r['step_time_s']:.3f}s", f"data {r['data_wait_s']:.3f}s"]
    if "reward_margin" in r:
        parts.append(f"margin {r['reward_margin']:.4g} | accuracy {r['reward_accuracy']:.3g}")
    if "val_loss" in r:
        parts.append(f"val_loss {r['val_loss']!r}")
    return " | ".join(parts)
