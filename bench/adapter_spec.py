"""Job specs for `adapter.train`, made the way `hpctl plan` makes them, and reading its step lines.

The bench does not hand-write specs: it composes the built-in tiny recipe with overrides through
hpctl's own pipeline (general config + local cluster + recipe + key=value), so what is measured is
what a user's `hpctl apply` would run, and writes the result as `<results_dir>/job_spec.json`
like the local backend does.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench import tinyllama as tl

BASE_RECIPE = "tiny/tiny_llama"
STEP_LINE = re.compile(r"step (\d+)/\d+ \| loss")  # the trainer's stdout line, printed after each step


def benchmark_model() -> list[str]:
    """Overrides that turn the tiny recipe into the throughput benchmark's model and batch."""
    return [f"model.hidden_size={tl.HIDDEN}", f"model.intermediate_size={tl.INTERMEDIATE}",
            f"model.num_hidden_layers={tl.LAYERS}", f"model.num_attention_heads={tl.HEADS}",
            f"model.num_key_value_heads={tl.KV_HEADS}", f"model.vocab_size={tl.VOCAB}",
            f"model.max_context_width={tl.SEQ}", f"model.max_position_embeddings={tl.SEQ}",
            f"model.train_batch_size={tl.MICRO_BATCH}", f"model.global_batch_size={tl.GLOBAL_BATCH}",
            f"model.optim.lr={tl.LR}", f"model.optim.weight_decay={tl.WEIGHT_DECAY}",
            f"model.optim.betas=[{tl.BETAS[0]},{tl.BETAS[1]}]", "model.optim.sched.name=constant",
            f"model.grad_clip={tl.GRAD_CLIP}", "trainer.precision=fp32"]


def no_checkpoints() -> list[str]:
    return ["exp_manager.create_checkpoint_callback=false",
            "exp_manager.checkpoint_callback_params.save_top_k=0",
            "exp_manager.checkpoint_callback_params.save_last=false",
            "exp_manager.export_full_model.save_last=false"]


def dataset(train_dir: Path) -> list[str]:
    return ["model.data.use_synthetic_data=false", "model.data.dataset_type=hf",
            f"model.data.train_dir={train_dir}", "model.data.num_workers=0"]


def compose(name: str, results_root: Path, devices: int, max_steps: int, overrides: list[str],
            recipe: str = BASE_RECIPE) -> dict[str, Any]:
    """The resolved spec for a run of `devices` local processes, as plan would produce it."""
    from hpctl.compose import compose as hpctl_compose
    args = [recipe, f"base_results_dir={results_root}", f"run.name={name}", f"trainer.devices={devices}",
            "trainer.num_nodes=1", f"trainer.max_steps={max_steps}", "trainer.log_every_n_steps=1",
            "trainer.limit_val_batches=0", *overrides]
    spec = hpctl_compose(args, "local")
    return spec.public_data()


def write(spec: dict[str, Any]) -> Path:
    """Write the spec where the local backend would (<results_dir>/job_spec.json); return the path."""
    results = Path(spec["recipes"]["run"]["results_dir"])
    results.mkdir(parents=True, exist_ok=True)
    path = results / "job_spec.json"
    path.write_text(json.dumps(spec, indent=2, sort_keys=True))
    return path


def slug(name: str) -> str:
    """A run name (results directory) from a human-readable label."""
    return "".join(ch if ch.isalnum() else "_" for ch in name)[:48]


def step_gaps(lines: list[tuple[float, str]]) -> dict[int, float]:
    """Step -> wall seconds since the previous step's line (from runner.stamped_lines output):
    the loop's real period, whatever the trainer itself reports."""
    stamps = {int(m.group(1)): t for t, line in lines if (m := STEP_LINE.search(line))}
    return {s: stamps[s] - stamps[s - 1] for s in sorted(stamps) if s - 1 in stamps}
