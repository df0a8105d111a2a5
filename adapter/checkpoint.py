"""Sharded checkpoints with torch.distributed.checkpoint (DCP), resume, preemption, and the
Hugging Face export.

Layout under exp_manager.checkpoint_dir:
  sharded/step_00000010/   DCP files (.metadata, __<rank>_0.distcp) and COMMITTED, written last
                           by rank 0 once every rank's data is on disk: a directory without it
                           is an interrupted save, never resumed from, and removed by the next save
  full/step_00000020/      export_full_model: config.json + model.safetensors (index when split),
                           loadable by AutoModelForCausalLM.from_pretrained
  peft/step_00000020/      LoRA runs: the adapter alone (adapter_config.json + weights)

A checkpoint holds the model and optimizer (sharded DTensors, so DCP reshards them onto any
world size or layout), the LR scheduler, the step, every data-parallel rank's loader state and
every rank's RNG states. Resume takes the newest committed step under checkpoint_dir, else
exp_manager.resume_from_checkpoint (a step directory, or a checkpoint_dir to search).
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.tensor import DTensor
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

from adapter import faults, qlora
from adapter.reader import ConfigError
from adapter.trainconfig import CheckpointConfig

MARKER = "COMMITTED"
MAX_SHARD_BYTES = 5 * 2**30
# Frozen parameters (LoRA's and QLoRA's base model) are not saved: a run rebuilds them from
# model.hf_model_name_or_path at start, and QLoRA's 4-bit ones are not DCP-serialisable tensors.
# Loading is therefore not strict about them; DCP itself fails on a trainable key it lacks.
STATE = StateDictOptions(ignore_frozen_params=True, strict=False)


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def committed(root: Path) -> list[tuple[int, Path]]:
    """(step, directory) of the committed checkpoints under root, oldest first."""
    found = []
    for path in root.glob("step_*") if root.is_dir() else []:
        if (path / MARKER).exists() and path.name[5:].isdigit():
            found.append((int(path.name[5:]), path))
    return sorted(found)


def find_resume(cfg: CheckpointConfig) -> Path | None:
    """The checkpoint to resume from, or None to start fresh: the newest committed one of this
    job's checkpoint_dir (its own progress, e.g. after a requeue), else resume_from_checkpoint."""
    found = committed(cfg.dir / "sharded")
    if found:
        return found[-1][1]
    if cfg.resume_from is None:
        return None
    path = cfg.resume_from
    if (path / MARKER).exists():
        return path
    found = committed(path / "sharded") or committed(path)
    if not found:
        raise ConfigError("exp_manager.resume_from_checkpoint", f"{path} holds no committed checkpoint")
    return found[-1][1]


class Checkpointer:
    """Saves (optionally in the background) and commits sharded checkpoints, keeping the newest N."""

    def __init__(self, cfg: CheckpointConfig, rank: int) -> None:
        self.cfg, self.rank = cfg, rank
        self.root = cfg.dir / "sharded"
        # Background saves talk over their own gloo group so they never interleave with training's.
        self.group = dist.new_group(backend="gloo") if cfg.async_save else None
        # An async save blocks only while it copies the state to host memory; one stager kept for
        # the run copies into the previous save's buffers (pinned where CUDA is), so no save after
        # the first allocates or faults in memory (they hold one copy of this rank's state for the run).
        self.stager = DefaultStager(StagingOptions(use_pinned_memory=torch.cuda.is_available(), use_shared_memory=False,
                                                   use_async_staging=False, use_non_blocking_copy=False)) \
            if cfg.async_save else None
        self.pending: tuple[Any, Path, int] | None = None

    def save(self, step: int, state: dict[str, Any]) -> None:
        self.wait()
        path = step_dir(self.root, step)
        decision = [None]
        if self.rank == 0:
            decision[0] = (path / MARKER).exists()
            if not decision[0] and path.exists():
                shutil.rmtree(path)  # an interrupted save of the same step
        dist.broadcast_object_list(decision, src=0)
        if decision[0]:
            return  # already committed (e.g. a preemption save right after a periodic one)
        if self.cfg.async_save:
            result = dcp.async_save(state, checkpoint_id=str(path), process_group=self.group, async_stager=self.stager)
            self.pending = (getattr(result, "upload_completion", result), path, step)
        else:
            try:
                dcp.save(state, checkpoint_id=str(path), storage_writer=faults.storage_writer(path, step))
            except (Exception, CheckpointException) as exc:  # DCP's is a BaseException: the trainer's
                # handler would let it through as a traceback. A full disk or file-size limit lands here.
                free = shutil.disk_usage(path.parent).free / 2**30
                raise RuntimeError(f"the checkpoint of step {step} could not be written to {path} "
                                   f"({_first_line(exc)}; {free:.2f} GiB free there); "
                                   "the earlier checkpoints are intact") from exc
            self._commit(path, step)

    def wait(self) -> None:
        """Finish a background save, then commit it."""
        if self.pending is not None:
            future, path, step = self.pending
            future.result()
            self.pending = None
            self._commit(path, step)

    def _commit(self, path: Path, step: int) -> None:
        if self.rank != 0:
            return
        # DCP's coordinator (rank 0) writes .metadata only after every rank's data is written.
        faults.crash_if("commit", step)
        tmp = path / (MARKER + ".tmp")
        tmp.write_text(json.dumps({"step": step, "world_size": dist.get_world_size()}) + "\n")
        os.replace(tmp, path / MARKER)
        kept = committed(self.root)
        if self.cfg.keep > 0:
            for _, old in kept[:-self.cfg.keep]:
                shutil.rmtree(old, ignore_errors=True)
        for stale in self.root.glob("step_*"):
            if not (stale / MARKER).exists() and stale.name < path.name:
                shutil.rmtree(stale, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    """The innermost cause's first line: DCP wraps an OSError in a CheckpointException of tracebacks."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    failures = getattr(exc, "failures", None)  # CheckpointException: {rank: exception or traceback}
    if isinstance(failures, dict) and failures:
        inner = next(iter(failures.values()))
        exc = inner[0] if isinstance(inner, tuple) and inner else inner
    text = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, data: Any,
                   step: int, rank: int, dp_rank: int) -> dict[str, Any]:
    """What a checkpoint holds. Per-rank parts are keyed by rank so DCP keeps each one."""
    model_sd, optim_sd = get_state_dict(model, optimizer, options=STATE)
    return {"model": model_sd, "optim": optim_sd, "scheduler": scheduler.state_dict(), "train": {"step": step},
            "data": {f"dp_{dp_rank}": pickle.dumps(data.state_dict())},
            "rng": {f"rank_{rank}": pickle.dumps(_rng_state())}}


def restore(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, data: Any,
            rank: int, dp_rank: int) -> int:
    """Load a checkpoint into the live objects (resharding as needed); returns its step."""
    model_sd, optim_sd = get_state_dict(model, optimizer, options=STATE)
    available = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    data_key, rng_key = f"dp_{dp_rank}", f"rank_{rank}"
    state: dict[str, Any] = {"model": model_sd, "optim": optim_sd, "scheduler": scheduler.state_dict(),
                             "train": {"step": 0}}
    # Written by a different layout, a checkpoint may lack this rank's loader or RNG state.
    if f"data.{data_key}" in available:
        state["data"] = {data_key: b""}
    if f"rng.{rng_key}" in available:
        state["rng"] = {rng_key: b""}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"], options=STATE)
    scheduler.load_state_dict(state["scheduler"])
    step = int(state["train"]["step"])
    data.load_state_dict(pickle.loads(state["data"][data_key]) if "data" in state else None, step)
    if "rng" in state:
        _set_rng_state(pickle.loads(state["rng"][rng_key]))
    return step


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def gather_full(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0's CPU (empty elsewhere); every rank must call it.

    QLoRA's 4-bit weights are dequantized on each rank and gathered as plain tensors: DTensor's
    all-gather of torchao's NF4 tensor issues one functional collective per inner tensor and never
    waits on them (torch reports "unwaited collective calls" at exit), so the gathered 4-bit data
    could be read before gloo or NCCL has filled it. Each shard holds whole quantization blocks
    (adapter.qlora), so dequantizing shards gives exactly the rows of the dequantized whole."""
    if not any(qlora.is_nf4(p.to_local() if isinstance(p, DTensor) else p) for p in model.parameters()):
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    full = {}
    for key, value in get_model_state_dict(model).items():
        if isinstance(value, DTensor):
            local = value.to_local()
            if qlora.is_nf4(local):
                local = local.get_original_weight()
                value = DTensor.from_local(local, value.device_mesh, value.placements, run_check=False,
                                           shape=value.shape, stride=value.stride())
            # on the mesh's device first, as torch's own full-state-dict path does: a CPU-offloaded
            # shard cannot be all-gathered over NCCL
            value = value.to(value.device_mesh.device_type).full_tensor()
        elif qlora.is_nf4(value):
            value = value.get_original_weight()
        if dist.get_rank() == 0:
            full[key] = value.cpu()
    return full


@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Build a directory under a sibling .tmp name and rename it into place when complete."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def write_hf(weights: dict[str, torch.Tensor], config: Any, out_dir: Path, dtype: torch.dtype,
             extra_files: Iterable[Path] = ()) -> None:
    """Write a Hugging Face model directory (config.json, safetensors) from HF-named full weights."""
    weights = {k: v.to(dtype).contiguous() for k, v in weights.items()}
    if getattr(config, "tie_word_embeddings", False):
        weights.pop("lm_head.weight", None)
    with atomic_dir(out_dir) as tmp:
        config.dtype = dtype
        config.save_pretrained(tmp)
        _write_safetensors(weights, tmp)
        for file in extra_files:
            shutil.copy(file, tmp / file.name)


def _write_safetensors(weights: dict[str, torch.Tensor], directory: Path) -> None:
    from safetensors.torch import save_file
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(weights):
        nbytes = weights[name].numel() * weights[name].element_size()
        if shards[-1] and size + nbytes > MAX_SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = weights[name]
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(directory / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / file), metadata={"format": "pt"})
        weight_map.update({name: file for name in shard})
    total = sum(t.numel() * t.element_size() for t in weights.values())
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")


class Preemption:
    """SIGTERM (preemption, torchrun's shutdown) and SIGUSR1 (Slurm's pre-timeout signal) ask for
    a checkpoint and a clean exit. The handler only sets a flag; the loop checks it between steps,
    agreed across ranks (a signal may reach ranks at different moments)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.signum: int | None = None
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def requested(self) -> bool:
        """Checked every step, so it never waits for the accelerator: the flag is agreed on over
        the CPU (gloo) backend, and one process has no one to agree with."""
        if dist.get_world_size() == 1:
            return self.signum is not None
        flag = torch.tensor([1.0 if self.signum is not None else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
