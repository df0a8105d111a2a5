"""Section 4: how long a checkpoint save holds up training, synchronous and asynchronous.

adapter.train runs FSDP2 over 2 processes and saves a sharded checkpoint every K steps (keeping 2,
so deleting old ones is part of the cost), once with `checkpoint_callback_params.async_save: false`
and once with true. The trainer prints one line per step, after the step and before that step's
save; the bench stamps each line as it arrives. So the gap between the lines of steps s and s+1
is step s+1 plus whatever the save after step s blocked. Per save:
  stall = gap(s+1) - step time,   spill = gap(s+2) - step time
where the step time is the median gap of the steps at least two after a save (and after the
warm-up). The stall is what the loop waits for; the spill is what a background save still costs
the next step on a machine where it competes for the same cores. Both are reported as seconds and
relative to one step. In the full run each run waits for a quiet machine and is repeated when
others disturbed it (bench.runner.steady).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench import adapter_spec, runner
from bench.memory_accuracy import model_overrides
from bench.report import Row, Section, median

KEY, TITLE = "checkpoint_stall", "4. Checkpoint stall: FSDP2, 2 proc, 64M-param Llama, blocked per sharded save"
WARMUP = 2
# A model large enough that writing dominates a save (about 64M parameters, 0.77 GB with AdamW's
# state), with short sequences so that its steps stay about a second on a CPU core.
SHAPE = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 4, "num_attention_heads": 16,
         "num_key_value_heads": 8, "vocab_size": 8192, "max_position_embeddings": 64}
# --quick (the CI smoke run) checks the mechanics on a model a quarter the width; its figure says less.
QUICK_SHAPE = {**SHAPE, "hidden_size": 256, "intermediate_size": 704, "num_attention_heads": 4,
               "num_key_value_heads": 2}


def analyse(gaps: dict[int, float], every: int, last: int) -> dict[str, float | list[float]]:
    saves = [s for s in range(every, last, every)]  # the save after the last step has no next step
    normal = [g for s, g in gaps.items() if s > WARMUP + 1 and (s - 1) % every and (s - 2) % every]
    if not saves or not normal:
        raise RuntimeError(f"too few steps to separate saves from steps: gaps {gaps}")
    step = median(normal)
    stalls = [gaps[s + 1] - step for s in saves if s + 1 in gaps]
    spills = [gaps[s + 2] - step for s in saves if s + 2 in gaps]
    return {"step_s": step, "stall_s": median(stalls), "spill_s": median(spills) if spills else 0.0,
            "stalls_s": stalls, "spills_s": spills, "saves": len(stalls)}


def _run(mode: str, root: Path, steps: int, every: int, quick: bool) -> tuple[dict, int]:
    overrides = [*model_overrides(QUICK_SHAPE if quick else SHAPE), "model.sharding_strategy=full_shard", "model.shard_degree=2",
                 "exp_manager.create_checkpoint_callback=true",
                 "exp_manager.checkpoint_callback_params.save_top_k=2",
                 f"exp_manager.checkpoint_callback_params.every_n_train_steps={every}",
                 "exp_manager.checkpoint_callback_params.save_last=false",
                 f"++exp_manager.checkpoint_callback_params.async_save={'true' if mode == 'async' else 'false'}",
                 "exp_manager.export_full_model.save_last=false"]
    spec = adapter_spec.compose(f"ckpt_{mode}", root, 2, steps, overrides)
    ckpt_dir = Path(spec["recipes"]["exp_manager"]["checkpoint_dir"])

    def measure() -> tuple[list[tuple[float, str]], runner.Timed]:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # a repeated attempt must not resume from the last one
        path = adapter_spec.write(spec)
        timed = runner.stamped_lines(runner.torchrun(2, "adapter.train", "--config", str(path)))
        return timed.lines, timed

    lines, timed, attempts = runner.steady(measure, patient=not quick)
    sizes = [sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in ckpt_dir.rglob("step_*") if d.is_dir()]
    result = {**analyse(adapter_spec.step_gaps(lines), every, steps),
              "foreign_cores": round(timed.foreign_cores, 3), "attempts": attempts}
    return result, max(sizes, default=0)


def run(section: Section, quick: bool) -> None:
    steps, every = (10, 4) if quick else (21, 4)
    results, size = {}, 0
    with tempfile.TemporaryDirectory(prefix="hpctl-bench-ckpt-") as tmp:
        for mode in ("sync", "async"):
            results[mode], bytes_ = _run(mode, Path(tmp), steps, every, quick)
            size = max(size, bytes_)
    sync, asyn = results["sync"], results["async"]
    section.rows = [
        Row("sync save: loop blocked per save, vs one step", sync["stall_s"], "s", sync["step_s"],
            note=f"others used {sync['foreign_cores']:.2f} cores"),
        Row("async save: loop blocked per save, vs one step", asyn["stall_s"], "s", asyn["step_s"],
            note=f"others used {asyn['foreign_cores']:.2f} cores"),
        Row("async save blocked vs sync save blocked", asyn["stall_s"], "s", sync["stall_s"], "<= 0.25x",
            asyn["stall_s"] <= 0.25 * sync["stall_s"]),
        Row("async save: blocked + next step's slowdown, vs one step", asyn["stall_s"] + asyn["spill_s"], "s",
            asyn["step_s"]),
    ]
    section.details = {"steps": steps, "every_n_train_steps": every, "checkpoint_bytes": size,
                       "shape": QUICK_SHAPE if quick else SHAPE, **results}
