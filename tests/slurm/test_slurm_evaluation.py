"""Train -> evaluate on the real two-node Slurm: the built-in tiny_llama on both nodes, then, applied
while it is still queued or running, an evaluation of its export with `--after` (Slurm's
afterok dependency) and `run.model_name_or_path: job:NAME`; its scores equal lm-eval's own run."""
from __future__ import annotations

import json
import socket
import sys

import pytest

from tests.evaluation.helpers import TASKS, lm_eval_directly, word_tokenizer
from tests.helpers.slurm import Workspace
from tests.slurm.test_slurm_adapter import REPO, overrides

pytest.importorskip("lm_eval", reason="evaluation jobs need lm-eval (the evaluation extra)")
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def free_port() -> int:
    """A port of this issue's range (23000-23999) nothing listens on, for a job's c10d rendezvous:
    the default (29500 + job id % 2000) may be taken by another user's job on this shared host."""
    for port in range(23500, 24000):
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 23500-23999")


def test_an_evaluation_after_training_runs_once_training_succeeded(tmp_path, slurm_cluster) -> None:
    ws = Workspace(tmp_path / "ws")
    tokenizer = word_tokenizer(tmp_path / "tokenizer")
    ws.apply("train", overrides("train", f"+model.data.tokenizer_name_or_path={tokenizer}",
                                f"+cluster.env.HPCTL_RDZV_PORT={free_port()}", max_steps=4))
    out = ws.apply("score", ["evaluation/lm_eval_task", "--cluster", "slurm", "run.name=score",
                             "run.model_name_or_path=job:train", "trainer.accelerator=cpu",
                             f"evaluation.task={TASKS}", "evaluation.metric=all", f"cluster.python={sys.executable}",
                             "cluster.exclusive=false", "cluster.mem=null", f"cluster.workdir={REPO}",
                             f"+cluster.env.HPCTL_RDZV_PORT={free_port() + 1}", "--after", "train"])
    train_id = ws.status("train")["job_id"]
    assert f"#SBATCH --dependency=afterok:{train_id}" in out
    assert ws.wait("train", timeout_s=400)["state"] == "SUCCEEDED"
    score = ws.wait("score", timeout_s=400)
    assert score["state"] == "SUCCEEDED", ws.log("score")
    # Slurm held the evaluation until training ended: the batch script writes its spec when it starts
    ended = (ws.results("train") / "logs" / f"{train_id}.exit").stat().st_mtime
    assert (ws.results("score") / "job_spec.json").stat().st_mtime >= ended
    export = ws.results("train") / "checkpoints" / "full" / "step_00000004"
    ours = json.loads((ws.results("score") / "eval" / "results.json").read_text())["results"]
    direct = lm_eval_directly(export, tmp_path / "direct")["results"]
    for task, metric in {"tiny_choice": "acc,none", "tiny_gen": "exact_match,none"}.items():
        assert ours[task][metric] == direct[task][metric]
    assert {s["task"] for s in score["evaluation"]} == {"tiny_choice", "tiny_gen"}
