"""Apply semantics a team can rely on (hpctl/apply.py).

- apply without a saved plan takes the state lock first, then plans under it: concurrent applies
  of different jobs in one workspace all succeed and no record is lost;
- a job that ended FAILED or CANCELLED, re-applied with unchanged inputs, plans as `~` resubmit
  with the reason (the plan refreshes its status from the scheduler first);
- validate runs exactly plan's checks, rendering included.

The local backend runs a stand-in for python here (cluster.python): these tests are about hpctl's
state and plans, not the trainer, so each "job" is a script that exits at once with a set code.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from hpctl.errors import HpctlError
from hpctl.state import State


def stub_python(directory: Path, code: int) -> Path:
    """A stand-in interpreter: records that it ran, then exits with `code`."""
    path = directory / f"python-exit-{code}"
    path.write_text(f"#!/bin/sh\necho ran >> {directory}/runs.log\nexit {code}\n")
    path.chmod(0o755)
    return path


def wait_ended(run_cli, ws: Path, job: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc, out, _ = run_cli("status", job, "-w", ws, "--json")
        state = json.loads(out)["jobs"][0]["state"]
        if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"{job} did not end within {timeout} s")


@pytest.mark.slow
def test_ten_concurrent_applies_of_distinct_jobs_all_apply(tiny_workspace, hpctl_bin, tmp_path):
    """A sweep from a shell loop: ten `hpctl apply --auto-approve` of different jobs started at
    once. Each waits for the lock, plans under it and applies: all ten are recorded, the serial
    grows by exactly ten, and state stays valid."""
    ws = tiny_workspace()
    python = stub_python(tmp_path, 0)
    env = {k: v for k, v in os.environ.items()}
    procs = [subprocess.Popen([str(hpctl_bin), "apply", "mini", "--auto-approve", "--lock-timeout", "300",
                               f"cluster.python={python}", f"run.name=sweep-{i}"],
                              cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(10)]
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    for rc, out, err in results:
        assert rc == 0, err
        assert "Apply complete: job sweep-" in out and "Traceback" not in err
    state = State.load(ws / ".hpctl" / "state.json")
    assert sorted(state.jobs) == sorted(f"sweep-{i}" for i in range(10))
    assert state.serial == 10


@pytest.mark.slow
def test_a_failed_job_reapplied_unchanged_is_resubmitted_with_the_reason(tiny_workspace, run_cli, tmp_path):
    ws = tiny_workspace()
    failing = stub_python(tmp_path, 1)
    args = ["mini", "-w", ws, f"cluster.python={failing}"]
    rc, out, err = run_cli("apply", *args, "--auto-approve")
    assert rc == 0, err
    assert wait_ended(run_cli, ws, "mini") == "FAILED"
    # unchanged inputs: not "No changes" but a resubmit, saying why
    rc, out, err = run_cli("plan", *args)
    assert rc == 0 and "~ job mini: update" in out, out
    assert "the job ended FAILED: it will be submitted again unchanged" in out
    rc, out, err = run_cli("apply", *args, "--auto-approve")
    assert rc == 0 and "resubmitted" in out, out + err
    assert wait_ended(run_cli, ws, "mini") == "FAILED"  # first: the job runs detached, after apply returns
    assert (tmp_path / "runs.log").read_text().count("ran") == 2
    # a cancelled job likewise; one that succeeded is left alone
    rc, out, _ = run_cli("cancel", "mini", "-w", ws)
    rc, out, _ = run_cli("plan", *args)
    assert "the job ended CANCELLED" in out
    ok = stub_python(tmp_path, 0)
    rc, out, err = run_cli("apply", "mini", "-w", ws, f"cluster.python={ok}", "--auto-approve")
    assert rc == 0, err
    assert wait_ended(run_cli, ws, "mini") == "SUCCEEDED"
    rc, out, _ = run_cli("plan", "mini", "-w", ws, f"cluster.python={ok}")
    assert "No changes" in out or "0 to add, 0 to change" in out, out


def test_validate_renders_like_plan(tiny_workspace, run_cli):
    """A Kubernetes job without an image fails at rendering: validate says so as plan does."""
    ws = tiny_workspace()
    for command in ("validate", "plan"):
        rc, out, err = run_cli(command, "mini", "-w", ws, "-c", "k8s")
        assert rc == 1 and "container image" in err, (command, err)


@pytest.mark.slow
def test_a_local_job_submitted_but_not_recorded_is_adopted_not_run_again(tiny_workspace, run_cli, run_hpctl, tmp_path):
    """A fresh workspace's first `hpctl apply`, SIGKILLed once the job runs but before state
    records it. The state file was made, with its lineage, before the job started: `hpctl plan`
    finds the running job by the tag in its environment and shows it adopted (writing nothing),
    `hpctl apply` records it, and the job ran once."""
    ws = tiny_workspace()
    runs = tmp_path / "runs.log"
    python = tmp_path / "python-sleeps"
    python.write_text(f"#!/bin/sh\necho ran >> {runs}\nexec sleep 60\n")
    python.chmod(0o755)
    args = ["mini", "-w", ws, f"cluster.python={python}"]
    killed = run_hpctl("apply", *args, "--auto-approve", env={"HPCTL_APPLY_CRASH_AT": "after_submit"})
    assert killed.returncode == -9, killed.stderr
    path = ws / ".hpctl" / "state.json"
    state = State.load(path)
    assert (state.jobs, state.serial, bool(state.lineage)) == ({}, 0, True)
    try:
        deadline = time.monotonic() + 30
        while not runs.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        before = path.read_bytes()
        rc, out, err = run_cli("plan", *args)
        assert rc == 0, err
        assert "adopted job mini (local job " in err and "found on the scheduler but missing from state" in err
        assert "No changes" in out and path.read_bytes() == before
        rc, out, err = run_cli("apply", *args, "--auto-approve")
        assert rc == 0 and "No changes" in out, out + err
        record = State.load(path).jobs["mini"]
        assert (record.status, record.applied_at, State.load(path).lineage) == ("RUNNING", "(adopted)", state.lineage)
        assert f"local job {record.job_id}," in err
        rc, out, err = run_cli("plan", *args)  # recorded now: nothing more to adopt
        assert "adopted" not in err and "No changes" in out
    finally:
        assert run_cli("cancel", "mini", "-w", ws)[0] == 0
    assert runs.read_text().count("ran") == 1


def test_a_saved_plan_with_secrets_is_stale_once_its_inputs_change(tiny_workspace, run_cli, monkeypatch):
    """A saved plan needing a secret re-reads its inputs at apply for the secret's value (never
    saved); once an input file changed since the plan was made it is refused before the state lock
    is taken, and nothing is submitted or recorded."""
    from hpctl.apply import apply_saved
    from hpctl.plan import Plan
    monkeypatch.setenv("MY_TOKEN", "s3cr3t-value")
    ws = tiny_workspace()
    planfile = ws / "mini.plan"
    rc, _, err = run_cli("plan", "mini", "-w", ws, "+env_vars.HF_TOKEN=${oc.env:MY_TOKEN}", "--out", planfile)
    assert rc == 0, err
    recipe = ws / "recipes" / "tiny" / "mini.yaml"
    recipe.write_text(recipe.read_text() + "\n# edited after the plan was made\n")
    lines: list[str] = []
    with pytest.raises(HpctlError, match="the plan is stale: its input files changed since it was made"):
        apply_saved(Plan.load(planfile), ws / ".hpctl" / "state.json", 1.0, lines.append, lines.append)
    assert lines == [] and not (ws / ".hpctl").exists()
