"""Helpers for the trainer's tests: tiny recipes, real launches (torchrun or srun-style), metrics.

An importable module (tests/adapter/conftest.py holds only the fixtures built on it), so that test
modules, tests/slurm and tests/test_trainer_contract.py import these names from one place.
"""
from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def crash_seeds(default: str) -> list[int]:
    """Seeds of the random-rank kill tests (local and Slurm): HPCTL_CRASH_SEEDS=5,6,7 runs more
    than the default that CI runs."""
    return [int(s) for s in os.environ.get("HPCTL_CRASH_SEEDS", default).split(",")]


def crash_point(seed: int, last_step: int) -> tuple[int, int]:
    """(rank, step) of a seed's SIGKILL (HPCTL_CRASH_AT=step@STEP@RANK) in a 2-rank run: odd
    seeds kill rank 1, even ones rank 0, after a step from 1 to last_step."""
    return seed % 2, random.Random(seed).randint(1, last_step)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def tiny_recipe(results_dir: Path, **sections: Any) -> dict[str, Any]:
    """A Llama small enough for 2 CPU cores (hidden 64, 2 layers, 4 heads, 2 KV heads, vocab 256,
    sequences of 64), on synthetic data, fp32, a constant LR after 2 warmup steps; a checkpoint
    every 3 steps, all kept; validation every 3 steps. `sections` are deep-merged on top."""
    recipe = {
        "run": {"name": "tiny", "results_dir": str(results_dir)},
        "trainer": {"devices": 1, "num_nodes": 1, "accelerator": "cpu", "precision": "32", "max_steps": 6,
                    "log_every_n_steps": 1, "val_check_interval": 3, "limit_val_batches": 2},
        "exp_manager": {"checkpoint_callback_params": {"save_top_k": -1, "every_n_train_steps": 3},
                        "export_full_model": {"every_n_train_steps": 0, "save_last": True}},
        "model": {"model_type": "llama_v3", "train_batch_size": 2, "global_batch_size": 4, "seed": 7,
                  "grad_clip": 1.0, "max_context_width": 64, "hidden_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
                  "vocab_size": 256, "rope_theta": 10000.0,
                  "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01, "betas": [0.9, 0.95],
                            "sched": {"name": "constant", "warmup_steps": 2}},
                  "data": {"use_synthetic_data": True}},
    }
    return deep_merge(recipe, sections)


def write_spec(recipe: dict[str, Any], path: Path) -> Path:
    """A resolved spec as hpctl writes it: the recipe under `recipes`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"recipes": recipe}, indent=1))
    return path


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "HPCTL_FAIL_AT_STEP"}
    out.update({"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **extra})
    return out


def torchrun(recipe: dict[str, Any], nproc: int, spec_name: str = "spec.json", timeout: int = 300,
             **extra_env: str) -> subprocess.CompletedProcess:
    """Launch the trainer under torchrun with `nproc` processes (trainer.devices set to match)."""
    recipe = deep_merge(recipe, {"trainer": {"devices": nproc}})
    spec = write_spec(recipe, Path(recipe["run"]["results_dir"]).parent / spec_name)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "adapter.train", "--config", str(spec)]
    return subprocess.run(cmd, cwd=REPO, env=env(**extra_env), capture_output=True, text=True, timeout=timeout)


def srun_style(recipe: dict[str, Any], spec_name: str = "spec.json", **extra_env: str) -> subprocess.Popen:
    """Start one trainer process as srun would (SLURM_* variables, no torchrun), in the background.
    Its output goes to a file (`proc.log`), so a long run never blocks on a full pipe."""
    spec = write_spec(recipe, Path(recipe["run"]["results_dir"]).parent / spec_name)
    slurm = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0", "OMP_NUM_THREADS": "1"}
    log = spec.with_suffix(f".{len(list(spec.parent.glob(spec.stem + '.*.log')))}.log")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "adapter.train", "--config", str(spec)], cwd=REPO,
                                env=env(**slurm, **extra_env), stdout=out, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """The run exited 0 and left no collective unwaited (torch reports those when the process
    group is destroyed: their outputs may have been read before they were filled)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "unwaited collective" not in (proc.stderr or ""), proc.stderr[-3000:]
    return proc


def records(results_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (results_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def losses(results_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(results_dir)}


def sharded(results_dir: Path) -> Path:
    return results_dir / "checkpoints" / "sharded"


def export_dir(results_dir: Path, step: int) -> Path:
    return results_dir / "checkpoints" / "full" / f"step_{step:08d}"


WORDS = ["the", "cat", "dog", "sat", "ran", "on", "under", "a", "mat", "tree", "and", "then", "slept", "ate"]


def pattern_rows(count: int, seq_len: int, vocab: int, seed: int) -> list[dict[str, list[int]]]:
    """Pre-tokenized rows (input_ids, attention_mask, labels) of learnable counting sequences."""
    import random
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        start, stride = rng.randrange(vocab), rng.randrange(1, 5)
        ids = [(start + stride * t) % vocab for t in range(seq_len)]
        rows.append({"input_ids": ids, "attention_mask": [1] * seq_len, "labels": ids})
    return rows
