"""The README's main job, for real: plan, apply, status, logs, re-apply and cancel on the local
backend, with torchrun and the trainer running as real processes on CPU (gloo)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def hpctl(ws: Path, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "hpctl", *args, "--workspace", str(ws), "--no-color"],
                       capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in r.stdout + r.stderr
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def status(ws: Path) -> dict:
    return json.loads(hpctl(ws, "status", "tiny-llama", "--json").stdout)["jobs"][0]


def wait_for(ws: Path, states: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(ws)
        if st["state"] in states:
            return st
        time.sleep(1)
    raise AssertionError(f"job never reached {states}: {st}")


def test_apply_status_logs_reapply_cancel(tmp_path):
    ws = tmp_path
    results = ws / "results" / "tiny-llama"
    plan = hpctl(ws, "plan", "tiny_llama", "--cluster", "local", "trainer.max_steps=4", "--detailed-exitcode",
                 check=False)
    assert plan.returncode == 2 and "Plan: 1 to add" in plan.stdout

    out = hpctl(ws, "apply", "tiny_llama", "--cluster", "local", "trainer.max_steps=4", "--auto-approve").stdout
    assert "Apply complete: job tiny-llama created" in out
    logs = hpctl(ws, "logs", "tiny-llama", "-f").stdout  # follows until the job ends
    assert "finished at step 4" in logs
    # a quiet first run: no dependency noise (torchao is not loaded without fp8 / NF4, torch's
    # _pytree warning is filtered), no torchrun banner, and one rank prefix per line
    assert not [line for line in logs.splitlines() if "torchao" in line or "_pytree" in line
                or "OMP_NUM_THREADS" in line or re.match(r"\[rank\d+\]: ?\[rank\d+\]", line)]
    st = wait_for(ws, {"SUCCEEDED", "FAILED"})
    assert st["state"] == "SUCCEEDED" and st["exit_code"] == 0
    assert st["metrics"]["step"] == 4 and isinstance(st["metrics"]["loss"], float)
    rank0 = hpctl(ws, "logs", "tiny-llama", "--rank", "0").stdout
    # --rank strips torchrun's "[rankN]: " prefix (torch's own C++ warnings carry "[rank0]:W...")
    assert "finished at step 4" in rank0 and "[rank0]: " not in rank0 and "[rank1]" not in rank0
    assert "finished at step" not in hpctl(ws, "logs", "tiny-llama", "--rank", "1").stdout  # rank 0 logs progress
    lines = [json.loads(x) for x in (results / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    assert json.loads((results / "job_spec.json").read_text())["recipes"]["trainer"]["max_steps"] == 4

    # the same configuration again: nothing to do
    again = hpctl(ws, "plan", "tiny_llama", "--cluster", "local", "trainer.max_steps=4", "--detailed-exitcode",
                  check=False)
    assert again.returncode == 0 and "No changes." in again.stdout

    # a larger max_steps is an update: resubmitted into the same results dir, resuming at step 4
    upd = hpctl(ws, "plan", "tiny_llama", "--cluster", "local", "trainer.max_steps=6").stdout
    assert "~ recipes.trainer.max_steps: 4 -> 6" in upd and "Plan: 0 to add, 1 to change, 0 to destroy." in upd
    hpctl(ws, "apply", "tiny_llama", "--cluster", "local", "trainer.max_steps=6", "--auto-approve")
    hpctl(ws, "logs", "tiny-llama", "-f")
    assert wait_for(ws, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    steps = [json.loads(x)["step"] for x in (results / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # resumed: steps 1-4 were not trained twice

    # a long run, cancelled while running: SIGTERM, the trainer checkpoints, state says CANCELLED
    hpctl(ws, "apply", "tiny_llama", "--cluster", "local", "trainer.max_steps=100000", "--auto-approve")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        m = status(ws)["metrics"] or {}
        if m.get("step", 0) >= 8:
            break
        time.sleep(1)
    hpctl(ws, "cancel", "tiny-llama")
    st = status(ws)
    assert st["state"] == "CANCELLED"
    assert (results / "logs" / "stdout.log").exists()  # results are kept

    # destroy forgets the job but keeps every result
    hpctl(ws, "destroy", "tiny-llama", "--auto-approve")
    assert "tiny-llama" not in hpctl(ws, "state", "list", "--json").stdout
    assert (results / "metrics.jsonl").exists() and any((results / "checkpoints").iterdir())
