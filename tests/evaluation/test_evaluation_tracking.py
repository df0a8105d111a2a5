"""Scores where people look: the evaluation's metrics join the training job's MLflow run (the
real MLflow server the tracking tests start), and TensorBoard gets them in
output.eval_tensorboard_results_dir."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.trainer import REPO, env, export_dir, ok, tiny_recipe, torchrun, write_spec
from tests.adapter.test_tracking import MlflowServer, mlflow_server  # noqa: F401 - the session fixture
from tests.evaluation.helpers import TASKS, word_tokenizer

pytest.importorskip("lm_eval", reason="evaluation jobs need lm-eval (the evaluation extra)")
pytestmark = pytest.mark.slow


def test_training_and_evaluation_metrics_sit_in_one_mlflow_run(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results = tmp_path / "train"
    ok(torchrun(tiny_recipe(results, exp_manager={
        "create_mlflow_logger": True,
        "mlflow_logger_kwargs": {"tracking_uri": mlflow_server.uri, "experiment_name": "hpctl-eval-tests"}},
        model={"data": {"tokenizer_name_or_path": str(word_tokenizer(tmp_path / "tok"))}}), 1))
    run_id = json.loads((results / "checkpoints" / "tracking.json").read_text())["mlflow"]

    out, tensorboard = tmp_path / "eval", tmp_path / "tb"
    spec = write_spec({
        "run": {"name": "score", "results_dir": str(out), "model_name_or_path": str(export_dir(results, 6))},
        "trainer": {"accelerator": "cpu"},
        "evaluation": {"task": str(TASKS), "strategy": "zs", "metric": "accuracy"},
        "output": {"mlflow_tracking_uri": mlflow_server.uri, "mlflow_run_id": run_id,
                   "eval_tensorboard_results_dir": str(tensorboard)},
    }, tmp_path / "score.json")
    proc = subprocess.run([sys.executable, "-m", "adapter.evaluate", "--config", str(spec)], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"adapter: scores sent to MLflow run {run_id}" in proc.stdout

    scores = json.loads((out / "eval" / "results.json").read_text())["results"]
    expected = {"eval/tiny_choice/acc": scores["tiny_choice"]["acc,none"],
                "eval/tiny_choice/acc_stderr": scores["tiny_choice"]["acc_stderr,none"],
                "eval/tiny_gen/exact_match": scores["tiny_gen"]["exact_match,none"],
                "eval/tiny_gen/exact_match_stderr": scores["tiny_gen"]["exact_match_stderr,none"]}
    run = MlflowClient(mlflow_server.uri).get_run(run_id)
    assert {k: run.data.metrics[k] for k in expected} == pytest.approx(expected)
    assert "loss" in run.data.metrics  # the training run's own metrics, beside the scores
    assert run.info.status == "FINISHED"  # left as training ended it

    events = EventAccumulator(str(tensorboard))
    events.Reload()
    assert {tag: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"]} == pytest.approx(expected)
