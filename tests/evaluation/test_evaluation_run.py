"""Train the tiny built-in model on local, evaluate its export with `--after` and `job:NAME`, and
check the scores equal lm-eval run directly on the same export. Offline: the tasks ship in
tests/evaluation/tasks (one log-likelihood task, one generation task) with their JSONL data."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.evaluation.helpers import TASKS, env, hpctl, lm_eval_directly, wait, word_tokenizer

pytest.importorskip("lm_eval", reason="evaluation jobs need lm-eval (the evaluation extra)")
pytestmark = pytest.mark.slow

METRICS = {"tiny_choice": "acc,none", "tiny_gen": "exact_match,none"}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """tiny/tiny_llama for 4 steps on local, then (applied at once, so while it trains) the
    evaluation of its export: (workspace, `hpctl status --json` of both once ended)."""
    ws = tmp_path_factory.mktemp("ws")
    tokenizer = word_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    hpctl(ws, "apply", "--auto-approve", "tiny/tiny_llama", "trainer.max_steps=4",
          f"+model.data.tokenizer_name_or_path={tokenizer}")
    evaluate = ["evaluation/lm_eval_task", "run.model_name_or_path=job:tiny-llama", "trainer.accelerator=cpu",
                f"evaluation.task={TASKS}", "evaluation.metric=all", "--after", "tiny-llama"]
    planned = hpctl(ws, "plan", "--json", *evaluate)
    hpctl(ws, "apply", "--auto-approve", *evaluate)
    return ws, {"plan": json.loads(planned.stdout), **wait(ws, "tiny-llama", "lm-eval-task")}


def test_the_plan_resolves_job_name_to_the_export_and_waits_for_the_job(chain) -> None:
    ws, found = chain
    plan = found["plan"]
    export = ws / "results" / "tiny-llama" / "checkpoints" / "full" / "step_00000004"
    assert plan["summary"]["evaluation"]["model"] == str(export)
    assert plan["summary"]["evaluation"]["model_from"].startswith("job:tiny-llama: ")
    assert plan["summary"]["after"].startswith("tiny-llama (local job ")
    assert "exit.%s ]; do sleep 1; done" % found["tiny-llama"]["job_id"] in plan["artifact"]["text"]
    assert found["tiny-llama"]["state"] == found["lm-eval-task"]["state"] == "SUCCEEDED"


def test_the_job_writes_lm_evals_results_and_a_per_sample_log(chain) -> None:
    ws, _ = chain
    out = ws / "results" / "lm-eval-task" / "eval"
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"tiny_choice", "tiny_gen"}
    for task in METRICS:
        lines = (out / f"samples_{task}.jsonl").read_text().splitlines()
        assert len(lines) == 12 and {"doc", "resps", "target"} <= set(json.loads(lines[0]))


def test_status_shows_each_metric_with_its_stderr(chain) -> None:
    ws, found = chain
    scores = {(s["task"], s["metric"]): s for s in found["lm-eval-task"]["evaluation"]}
    assert set(scores) == {("tiny_choice", "acc"), ("tiny_gen", "exact_match")}
    assert all(isinstance(s["stderr"], float) for s in scores.values())
    text = hpctl(ws, "status", "lm-eval-task").stdout
    assert "lm-eval scores" in text and "tiny_choice" in text and "exact_match" in text


def test_the_scores_equal_lm_eval_run_directly_on_the_export(chain, tmp_path: Path) -> None:
    ws, _ = chain
    export = ws / "results" / "tiny-llama" / "checkpoints" / "full" / "step_00000004"
    direct = lm_eval_directly(export, tmp_path / "direct")["results"]
    ours = json.loads((ws / "results" / "lm-eval-task" / "eval" / "results.json").read_text())["results"]
    for task, metric in METRICS.items():
        stderr = metric.replace(",", "_stderr,")
        assert (ours[task][metric], ours[task][stderr]) == (direct[task][metric], direct[task][stderr])


def test_hyperpods_deterministic_launcher_script_runs_unchanged_on_the_export(chain, tmp_path: Path) -> None:
    """run_open_source_deterministic_eval.sh as HyperPod ships it, through `hpctl init`'s main.py, with
    its documented variables pointing at a local model (the export above) and a local task directory:
    the job runs lm-eval and writes the results where EVAL_RESULTS_DIR says."""
    from hpctl import dropin
    from tests.helpers.launcher_scripts import LAUNCHERS, copy_checkout
    if not LAUNCHERS["v2"].is_dir():
        pytest.skip(f"{LAUNCHERS['v2']} is absent")
    ws, _ = chain
    export = ws / "results" / "tiny-llama" / "checkpoints" / "full" / "step_00000004"
    root = copy_checkout("v2", tmp_path / "hyperpod")
    dropin.init(root)
    script = LAUNCHERS["v2"] / "launcher_scripts" / "evaluation" / "run_open_source_deterministic_eval.sh"
    variables = {"MODEL_NAME_OR_PATH": str(export), "TASK": str(TASKS), "SUBTASK": "tiny_choice", "STRATEGY": "zs",
                 "METRIC": "accuracy", "CLUSTER_TYPE": "local", "EXP_DIR": str(tmp_path / "exp"),
                 "EVAL_RESULTS_DIR": str(tmp_path / "eval"), "EVAL_TENSORBOARD_RESULTS_DIR": str(tmp_path / "tb")}
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**env(), **variables, "SAGEMAKER_TRAINING_LAUNCHER_DIR": str(root),
                               dropin.AUTO_APPROVE: "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Apply complete" in proc.stdout + proc.stderr
    status = ("status", "--json", "--state", root / dropin.STATE)  # the drop-in keeps state beside main.py
    deadline = time.monotonic() + 600
    while (found := json.loads(hpctl(root / "recipes_collection", *status).stdout)["jobs"][0])["state"] not in \
            ("SUCCEEDED", "FAILED", "CANCELLED"):
        assert time.monotonic() < deadline, found
        time.sleep(2)
    assert found["name"] == "deterministic-eval-job" and found["state"] == "SUCCEEDED", found
    results = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    assert set(results) == {"tiny_choice"} and isinstance(results["tiny_choice"]["acc,none"], float)
