"""Helpers for the trainer's tests: tiny recipes, real launches (torchrun or srun-style), metrics.

The session-scoped runs (`baseline`, `fsdp2`) are shared by several tests: each launch costs
seconds of imports, so a run that several checks compare against is made once.
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

import pytest

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


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, 6 steps of 2 micro-batches (global batch 4), TensorBoard on: the reference."""
    results = tmp_path_factory.mktemp("baseline") / "results"
    ok(torchrun(tiny_recipe(results, exp_manager={"create_tensorboard_logger": True}), 1))
    return results


@pytest.fixture(scope="session")
def fsdp2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The baseline's recipe with FSDP2 over 2 processes (1 micro-batch each per step)."""
    results = tmp_path_factory.mktemp("fsdp2") / "results"
    ok(torchrun(tiny_recipe(results), 2))
    return results


WORDS = ["the", "cat", "dog", "sat", "ran", "on", "under", "a", "mat", "tree", "and", "then", "slept", "ate"]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny word-level tokenizer (17 tokens), saved as a transformers tokenizer directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "[EOS]"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    out = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            eos_token="[EOS]").save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw-text JSONL (a `text` field per line): short repetitive sentences over WORDS."""
    import random
    rng = random.Random(0)
    out = tmp_path_factory.mktemp("text")
    lines = [json.dumps({"text": " ".join(rng.choice(WORDS) if i % 3 else "the" for i in range(rng.randint(5, 12)))})
             for _ in range(300)]
    (out / "part-0.jsonl").write_text("\n".join(lines[:150]) + "\n")
    (out / "part-1.jsonl").write_text("\n".join(lines[150:]) + "\n")
    return out


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


@pytest.fixture(scope="session")
def tokenized_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """HyperPod's pre-tokenized format as json.gz: (train_dir, val_dir), 64-token rows, vocab 256."""
    import gzip
    root = tmp_path_factory.mktemp("tokenized")
    dirs = []
    for name, count, seed in (("train", 96, 1), ("val", 16, 2)):
        (root / name).mkdir()
        with gzip.open(root / name / "data.json.gz", "wt") as f:
            f.writelines(json.dumps(row) + "\n" for row in pattern_rows(count, 64, 256, seed))
        dirs.append(root / name)
    return dirs[0], dirs[1]
