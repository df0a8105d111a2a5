"""Section 8: lm-eval through hpctl against lm-eval run directly, on the same model and tasks.

The model is the tiny built-in Llama trained for 4 steps on local (untimed), with the word-level
tokenizer of the evaluation tests; the tasks are the offline ones in tests/evaluation/tasks (a
log-likelihood task and a generation task, 12 documents each). Contenders, interleaved with the
order alternating, each a cold start:
  - hpctl: `hpctl apply evaluation/lm_eval_task ...` on the local cluster, timed from the start of
    apply to the job's exit marker (apply, the launch script, torchrun, adapter.evaluate, the
    results and per-sample files written);
  - lm-eval: `python -m lm_eval run --model hf --tasks tiny_choice,tiny_gen --include_path DIR
    --log_samples --output_path ...`, run from the task directory.
Both must give the same scores (checked). Goal: hpctl at most 1.1x lm-eval's wall time.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from bench import runner
from bench.report import Row, Section, median, spread

KEY, TITLE = "evaluation", "8. Evaluation: lm-eval through hpctl vs lm-eval directly (tiny model, CPU)"
GOAL = 1.1
TASK_NAMES = "tiny_choice,tiny_gen"


def _wait_exit(results: Path, timeout_s: float = 900) -> float:
    """The moment the local job's exit marker appeared (its launch script writes it last)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = list((results / "hpctl").glob("exit.*"))
        if found:
            code = found[0].read_text().strip()
            if code != "0":
                raise runner.RunFailed(f"{results.name} exited {code}:\n"
                                       + (results / "logs" / "stdout.log").read_text()[-3000:])
            return time.perf_counter()
        time.sleep(0.05)
    raise runner.RunFailed(f"{results.name} did not finish in {timeout_s} s")


def _hpctl(ws: Path, *args: str) -> None:
    runner.run([runner.console_script("hpctl"), *args, "-w", str(ws)], cwd=ws)


def _train(ws: Path, tokenizer: Path) -> Path:
    _hpctl(ws, "apply", "--auto-approve", "tiny/tiny_llama", "trainer.max_steps=4",
           f"+model.data.tokenizer_name_or_path={tokenizer}")
    _wait_exit(ws / "results" / "tiny-llama")
    return ws / "results" / "tiny-llama" / "checkpoints" / "full" / "step_00000004"


def _through_hpctl(ws: Path, model: Path, tasks: Path, i: int) -> tuple[float, dict]:
    start = time.perf_counter()
    _hpctl(ws, "apply", "--auto-approve", "evaluation/lm_eval_task", f"run.name=bench-eval-{i}",
           f"run.model_name_or_path={model}", "trainer.accelerator=cpu", f"evaluation.task={tasks}",
           "evaluation.metric=all")
    results = ws / "results" / f"bench-eval-{i}"
    wall = _wait_exit(results) - start
    return wall, json.loads((results / "eval" / "results.json").read_text())["results"]


def _direct(model: Path, tasks: Path, out: Path) -> tuple[float, dict]:
    timed = runner.run([sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
                        f"pretrained={model}", "--tasks", TASK_NAMES, "--include_path", str(tasks), "--device", "cpu",
                        "--output_path", str(out), "--log_samples"], cwd=tasks)
    return timed.wall_s, json.loads(next(out.rglob("results_*.json")).read_text())["results"]


def _scores(results: dict) -> dict[str, float]:
    return {f"{task}/{k}": v for task, values in results.items() for k, v in values.items()
            if "," in k and isinstance(v, (int, float))}


def run(section: Section, quick: bool) -> None:
    from tests.evaluation.helpers import TASKS, word_tokenizer  # the tests' offline tasks and tokenizer
    n = 1 if quick else 3
    walls: dict[str, list[float]] = {"hpctl": [], "lm_eval": []}
    with tempfile.TemporaryDirectory(prefix="hpctl-bench-eval-") as tmp:
        root = Path(tmp)
        ws = root / "ws"
        ws.mkdir()
        model = _train(ws, word_tokenizer(root / "tokenizer"))
        for i in range(n):
            for name in (["hpctl", "lm_eval"] if i % 2 == 0 else ["lm_eval", "hpctl"]):
                wall, results = (_through_hpctl(ws, model, TASKS, i) if name == "hpctl"
                                 else _direct(model, TASKS, root / f"direct-{i}"))
                walls[name].append(wall)
                scores = _scores(results)
                section.details.setdefault("scores", {}).setdefault(name, scores)
    if section.details["scores"]["hpctl"] != section.details["scores"]["lm_eval"]:
        raise runner.RunFailed(f"the scores differ: {section.details['scores']}")
    ours, theirs = median(walls["hpctl"]), median(walls["lm_eval"])
    section.rows = [Row("wall time, median: hpctl apply -> results vs lm_eval CLI", ours, "s", theirs,
                        f"<= {GOAL}x", ours <= GOAL * theirs,
                        note=f"{n} runs each, interleaved; same scores; tasks {TASK_NAMES}")]
    section.details.update({"runs_each": n, "samples": walls,
                            **{f"{k}_wall_s": spread(v) for k, v in walls.items()}})
