"""Real jobs on the real single-host Slurm of tests/slurm/cluster.sh (two slurmd: n1, n2).

Every job is rendered and submitted by the Slurm backend and runs torchrun across both nodes.
Without a reachable cluster these tests skip, except under CI, where they fail: CI must run them.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from adapter.digest import digest
from hpctl.backends.base import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, TERMINAL, JobRecord, JobStatus
from hpctl.backends.slurm import BACKEND, read_exit_marker
from hpctl.errors import HpctlError
from hpctl.spec import Spec

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Until adapter.train exists the jobs run this stand-in: it joins the process group, all-reduces
# each rank's (rank + 1) and writes one metrics line, with knobs (environment variables from the
# cluster config) to fail, to sleep, or to checkpoint on USR1.
STAND_IN_TRAINER = '''\
import argparse, json, os, signal, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--config")
spec = json.load(open(parser.parse_args().config))
rank, restart = int(os.environ["RANK"]), int(os.environ.get("SLURM_RESTART_COUNT", "0"))
print(f"trainer rank {rank}/{os.environ['WORLD_SIZE']} run {restart} on {os.environ['SLURMD_NODENAME']}")
print("secret " + ("present" if os.environ.get("HPCTL_SECRET_GIT_TOKEN") else "absent"))
if os.environ.get("FAIL_FIRST_RUN") and restart == 0:
    print("failing the first run")
    sys.exit(int(os.environ["FAIL_FIRST_RUN"]))
if os.environ.get("EXIT_CODE"):
    sys.exit(int(os.environ["EXIT_CODE"]))
usr1 = []
signal.signal(signal.SIGUSR1, lambda *_: usr1.append(1))
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([float(rank + 1)])
dist.all_reduce(total)
print(f"allreduce {total.item()}")
deadline = time.time() + (float(os.environ.get("SLEEP_FIRST_RUN", "0")) if restart == 0 else 0)
while time.time() < deadline and not usr1:
    time.sleep(0.1)
if usr1:
    print("USR1: checkpointing and stopping")
    sys.exit(0)
if rank == 0:
    with open(os.path.join(spec["recipes"]["run"]["results_dir"], "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": 1, "loss": 1.0, "allreduce": total.item(), "run": restart}) + "\\n")
dist.destroy_process_group()
'''


def launch_config(workdir: Path) -> dict[str, Any]:
    """Cluster-config entries that decide what the job runs: the one place to switch to the real
    adapter (workdir = the repository, and a tiny recipe in `job_spec`)."""
    (workdir / "adapter").mkdir(parents=True, exist_ok=True)
    (workdir / "adapter" / "__init__.py").write_text("")
    (workdir / "adapter" / "train.py").write_text(STAND_IN_TRAINER)
    return {"workdir": str(workdir), "python": sys.executable}


@pytest.fixture
def job_spec(tmp_path, slurm_cluster):
    launch = launch_config(tmp_path / "code")

    def make(name: str, nodes: int = 2, env: dict[str, str] | None = None, **cluster: Any) -> Spec:
        data = {
            "cluster_type": "slurm",
            "cluster": {"type": "slurm", "env": env or {}, **launch, **cluster},
            "recipes": {
                "run": {"name": name, "results_dir": str(tmp_path / name), "time_limit": "0:10:00"},
                "trainer": {"num_nodes": nodes, "devices": 1, "accelerator": "cpu", "max_steps": 1},
            },
        }
        return Spec(data=data, recipe_name=name, cluster_name="slurm-ci")

    return make


def submit(spec: Spec, secrets: dict[str, str] | None = None) -> JobRecord:
    """What `hpctl apply` does: render, submit, and keep a record with absolute log paths."""
    artifact = BACKEND.render(spec)
    job_id = BACKEND.submit(artifact, secrets or {})
    return JobRecord(name=spec.job_name, cluster="slurm-ci", backend="slurm", job_id=job_id,
                     spec_digest=digest(spec.public_data()), spec=spec.public_data(), artifact=artifact.to_json(),
                     results_dir=artifact.results_dir,
                     logs={k: v.replace("%j", job_id) for k, v in artifact.logs.items()}, applied_at="")


def log_text(record: JobRecord) -> str:
    path = Path(record.logs["stdout"])
    return path.read_text() if path.exists() else "(no log yet)"


def wait_for(record: JobRecord, until: Any, timeout_s: float = 120) -> tuple[JobStatus, list[str]]:
    """Poll describe until `until(status)`; also return the sequence of states seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = BACKEND.describe(record)
        if not seen or seen[-1] != status.state:
            seen.append(status.state)
        if until(status):
            return status, seen
        time.sleep(0.25)
    pytest.fail(f"job {record.job_id}: states {seen} after {timeout_s} s\n{log_text(record)}")


def terminal(status: JobStatus) -> bool:
    return status.state in TERMINAL


def test_two_node_torchrun_job_succeeds(job_spec):
    spec = job_spec("ok")
    spec.data["git"] = {"token": "s3cret-value"}
    record = submit(spec, {"HPCTL_SECRET_GIT_TOKEN": "s3cret-value"})
    status, seen = wait_for(record, terminal)
    assert (status.state, status.exit_code, status.backend_state) == (SUCCEEDED, 0, "COMPLETED"), log_text(record)
    assert seen[0] in (PENDING, RUNNING) and RUNNING in seen
    # both ranks joined one process group across the two slurmd "nodes"
    assert status.metrics == {"step": 1, "loss": 1.0, "allreduce": 3.0, "run": 0}
    text = log_text(record)
    assert "on n1" in text and "on n2" in text
    assert "s3cret-value" not in text and text.count("secret present") == 2
    rank1 = list(BACKEND.logs(record, rank=1))
    assert rank1[0].startswith("trainer rank 1/2 run 0 on n") and "allreduce 3.0" in rank1
    assert not any("rank 0/2" in line for line in rank1)
    assert read_exit_marker(record.results_dir, record.job_id) == 0
    assert json.loads(Path(record.results_dir, "job_spec.json").read_text()) == spec.public_data()


def test_failing_job_reports_failed_with_its_exit_code(job_spec):
    # torchrun exits 1 when a worker fails; one node keeps srun's exit code free of kill races
    record = submit(job_spec("fails", nodes=1, env={"EXIT_CODE": "3"}))
    status, _ = wait_for(record, terminal)
    assert (status.state, status.exit_code, status.backend_state) == (FAILED, 1, "FAILED"), log_text(record)
    assert read_exit_marker(record.results_dir, record.job_id) == 1
    assert "exitcode  : 3" in log_text(record)


def test_cancel_of_a_running_job(job_spec):
    auto_resume = {"enabled": True, "max_restarts": 2, "signal_seconds": 60}
    record = submit(job_spec("cancel", env={"SLEEP_FIRST_RUN": "300"}, auto_resume=auto_resume))
    wait_for(record, lambda s: s.state == RUNNING and "allreduce" in log_text(record))
    BACKEND.cancel(record)
    status, _ = wait_for(record, terminal, timeout_s=60)
    assert (status.state, status.backend_state) == (CANCELLED, "CANCELLED")
    assert "requeueing" not in log_text(record)  # a cancel is not a failure to resume from
    assert read_exit_marker(record.results_dir, record.job_id) is None


def test_auto_resume_requeues_a_failed_run_and_logs_follow_it(job_spec):
    auto_resume = {"enabled": True, "max_restarts": 2, "signal_seconds": 60}
    record = submit(job_spec("resume", env={"FAIL_FIRST_RUN": "3"}, auto_resume=auto_resume))
    followed: list[str] = []
    follower = threading.Thread(target=lambda: followed.extend(BACKEND.logs(record, follow=True)))
    follower.start()
    status, seen = wait_for(record, terminal, timeout_s=150)
    follower.join(timeout=30)
    assert (status.state, status.exit_code) == (SUCCEEDED, 0), log_text(record)
    assert status.detail == "restarts 1"
    assert status.metrics["run"] == 1  # the second run (SLURM_RESTART_COUNT=1) finished the job
    later = iter(seen)  # RUNNING, back to PENDING when requeued, RUNNING again, SUCCEEDED
    assert all(state in later for state in (RUNNING, PENDING, RUNNING, SUCCEEDED)), seen
    assert not follower.is_alive()
    joined = "\n".join(followed)
    for expected in ("failing the first run", "hpctl: requeueing after exit code", "run 1 on n", "hpctl: exit code 0"):
        assert expected in joined


def test_usr1_before_the_time_limit_checkpoints_and_requeues(job_spec):
    auto_resume = {"enabled": True, "max_restarts": 1, "signal_seconds": 60}
    record = submit(job_spec("usr1", env={"SLEEP_FIRST_RUN": "300"}, auto_resume=auto_resume))
    wait_for(record, lambda s: s.state == RUNNING and "allreduce" in log_text(record))
    # exactly what Slurm does signal_seconds before the limit (--signal=B:USR1@60)
    subprocess.run(["scancel", "--signal=USR1", "--batch", record.job_id], check=True, timeout=30)
    status, _ = wait_for(record, terminal, timeout_s=150)
    assert (status.state, status.metrics["run"]) == (SUCCEEDED, 1), log_text(record)
    text = log_text(record)
    assert text.count("USR1: checkpointing and stopping") == 2  # both ranks got it through torchrun
    assert "hpctl: requeueing" in text


def test_sbatch_test_only_estimates_or_explains(job_spec):
    estimate = BACKEND.test_only(BACKEND.render(job_spec("check")))
    assert "to start at" in estimate and "n[1-2]" in estimate
    with pytest.raises(HpctlError, match="node configuration is not available"):
        BACKEND.test_only(BACKEND.render(job_spec("too-big", nodes=5)))
