"""Scheduler faults on the real Slurm of tests/slurm/cluster.sh, through the CLI: slurmctld stopped
(`cluster.sh stop-controller`) while `hpctl status`, `logs`, `cancel` and `apply` run, started
again (with its saved state) inside apply's retry window, and hung (SIGSTOP) while `sbatch`
waits for its reply; and `squeue --json` without its plugin. tests/test_slurm_faults.py
covers the same with stand-in clients (and an sbatch that hangs, and squeue output that is not
JSON); this shows what the real 22.05 clients print and that a job survives the outage.

The jobs run a stand-in trainer that waits for a gate file, so each test decides when its job
ends and no torch training competes for the two cores. hpctl's client calls read a copy of the
cluster's slurm.conf with a short MessageTimeout: each client retries the connection for about
MessageTimeout seconds (10 by default) before it gives up, which would make every attempt cost
that much; hpctl's own retries (RETRY_DELAYS_S) are unchanged.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.slurm import Workspace, controller

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

GATED_TRAINER = """\
import os, time
gate = os.environ["HPCTL_TEST_GATE"]
print(f"stand-in rank {os.environ['RANK']} on {os.environ['SLURMD_NODENAME']} waiting for {gate}", flush=True)
while not os.path.exists(gate):
    time.sleep(0.2)
print(f"stand-in rank {os.environ['RANK']} done", flush=True)
"""


@pytest.fixture
def code(tmp_path: Path, slurm_cluster: None) -> Path:
    """A workdir whose `adapter.train` is the gated stand-in (the job's PYTHONPATH starts there)."""
    (tmp_path / "code" / "adapter").mkdir(parents=True)
    (tmp_path / "code" / "adapter" / "__init__.py").write_text("")
    (tmp_path / "code" / "adapter" / "train.py").write_text(GATED_TRAINER)
    return tmp_path / "code"


@pytest.fixture
def quick(tmp_path: Path) -> dict[str, str]:
    """The environment of hpctl's calls: SLURM_CONF, the cluster's slurm.conf with MessageTimeout=2."""
    conf = re.sub(r"(?m)^MessageTimeout=.*\n", "", Path("/etc/slurm/slurm.conf").read_text())
    path = tmp_path / "slurm-client.conf"
    path.write_text(conf + "MessageTimeout=2\n")
    return {"SLURM_CONF": str(path)}


@pytest.fixture
def gate(tmp_path: Path):
    """The file the stand-in waits for; created at the end whatever happened, so no job is left waiting."""
    yield tmp_path / "gate"
    (tmp_path / "gate").touch()


@pytest.fixture
def spawn():
    """Start `hpctl ARGS` in a workspace without waiting for it; any left running at the end are killed."""
    procs: list[subprocess.Popen] = []

    def start(ws: Workspace, *args: str, stderr: Any = subprocess.PIPE) -> subprocess.Popen:
        procs.append(subprocess.Popen([sys.executable, "-m", "hpctl", *args, "--workspace", str(ws.root), "--no-color"],
                                      stdout=subprocess.PIPE, stderr=stderr, text=True, env=ws.env))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture
def no_json(tmp_path: Path) -> dict[str, str]:
    """SLURM_CONF of a site whose Slurm lacks the JSON serializer: a PluginDir with every plugin but
    serializer/*, so `squeue --json` fails ("Unable to find plugin: serializer/json", exit 1)."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    default = Path(subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True,
                                  timeout=30).stdout.split("PluginDir", 1)[1].split("=", 1)[1].split()[0])
    for plugin in default.glob("*.so"):
        if not plugin.name.startswith("serializer_"):
            (plugins / plugin.name).symlink_to(plugin)
    conf = re.sub(r"(?m)^PluginDir=.*\n", "", Path("/etc/slurm/slurm.conf").read_text())
    (tmp_path / "slurm-nojson.conf").write_text(conf + f"PluginDir={plugins}\n")
    return {"SLURM_CONF": str(tmp_path / "slurm-nojson.conf")}


def gated(name: str, code: Path, gate: Path) -> list[str]:
    """A 2-node job of the built-in tiny_llama on the built-in slurm cluster, running the stand-in."""
    return ["tiny_llama", "--cluster", "slurm", f"run.name={name}", "trainer.accelerator=cpu",
            "trainer.num_nodes=2", "trainer.devices=1", "model.shard_degree=2", f"cluster.python={sys.executable}",
            "cluster.exclusive=false", "cluster.mem=null", f"cluster.workdir={code}",
            f"+cluster.env.HPCTL_TEST_GATE={gate}"]


def started(ws: Workspace, name: str) -> None:
    ws.wait(name, lambda j: j["state"] == "RUNNING" and ws.log(name).count("waiting for") == 2, timeout_s=120)


def test_slurmctld_down_during_status_logs_cancel_and_apply_then_back(code: Path, quick, gate, spawn, tmp_path):
    ws = Workspace(tmp_path / "ws", env=quick)
    ws.apply("held", gated("held", code, gate))
    started(ws, "held")
    follower = spawn(ws, "logs", "held", "-f")
    before = ws.state()
    elsewhere = Workspace(tmp_path / "ws2", env=quick)  # an apply in another workspace, meanwhile
    controller("stop")
    try:
        apply = spawn(elsewhere, "apply", *gated("other", code, gate), "--auto-approve")
        status = ws.hpctl("status", "held", "--json")  # answers, exit 0: the state is unknown, not an error
        (job,) = json.loads(status.stdout)["jobs"]
        assert (job["state"], job["backend_state"], job["job_id"]) == \
            ("UNKNOWN", "unreachable", before["jobs"]["held"]["job_id"])
        assert "slurmctld did not answer (Failed while looking for jobs (slurm_load_jobs))" in job["detail"]
        assert status.stderr.count("hpctl: squeue: slurmctld did not answer") == 3, status.stderr  # bounded
        assert "attempt 4 of 4" in status.stderr

        assert "waiting for" in ws.hpctl("logs", "held").stdout  # the log file needs no slurmctld

        cancel = ws.hpctl("cancel", "held", check=False)
        assert cancel.returncode == 1 and "the job was not cancelled" in cancel.stderr, cancel.stderr
        assert "Unable to contact slurm controller" in cancel.stderr and "scontrol ping" in cancel.stderr

        out, err = apply.communicate(timeout=120)
        assert apply.returncode == 1 and "Traceback" not in err, out + err
        assert "sbatch could not reach slurmctld (4 attempts); nothing was submitted" in err
        assert not (elsewhere.root / ".hpctl" / "state.json").exists() or elsewhere.state()["jobs"] == {}

        during = ws.state()  # readable, only moved forward, nothing lost, nothing added
        assert during["serial"] >= before["serial"] and set(during["jobs"]) == {"held"}
        assert during["jobs"]["held"]["job_id"] == before["jobs"]["held"]["job_id"]
        assert during["jobs"]["held"]["status"] != "CANCELLED"
    finally:
        controller("start")

    assert ws.status("held")["state"] == "RUNNING"  # the job ran on through the outage
    assert ws.hpctl("cancel", "held").stdout.startswith("cancelled held (slurm job ")
    job = ws.wait("held", timeout_s=60)
    assert (job["state"], job["backend_state"]) == ("CANCELLED", "CANCELLED")
    assert ws.state()["jobs"]["held"]["status"] == "CANCELLED"
    out, err = follower.communicate(timeout=60)  # `logs -f` followed through the outage, ended with the job
    assert follower.returncode == 0 and "Traceback" not in err, err
    assert out.count("waiting for") == 2 and "stand-in rank 0 done" not in out


def test_a_transient_sbatch_failure_is_retried_and_submits_once(code: Path, quick, no_json, gate, spawn, tmp_path):
    """slurmctld down for sbatch's first attempt and back before the next: one job, recorded. While
    it runs, a squeue whose --json cannot work leaves its status to scontrol."""
    ws, err = Workspace(tmp_path / "ws", env=quick), tmp_path / "apply.err"
    controller("stop")
    try:
        with err.open("w") as stderr:
            apply = spawn(ws, "apply", *gated("blip", code, gate), "--auto-approve", stderr=stderr)
        deadline = time.monotonic() + 60
        while "hpctl: sbatch: slurmctld did not answer" not in err.read_text():  # its first attempt failed
            assert apply.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
    finally:
        controller("start")  # back within the retry window (1 + 2 + 4 s)
    out, _ = apply.communicate(timeout=60)
    assert apply.returncode == 0, out + err.read_text()
    assert "trying again in 1 s (attempt 2 of 4)" in err.read_text() and "Traceback" not in err.read_text()
    job_id = re.search(r"created as slurm job (\d+)", out).group(1)
    assert ws.state()["jobs"]["blip"]["job_id"] == job_id

    script = ws.results("blip") / "hpctl" / "blip.sbatch"
    queue = subprocess.run(["squeue", "-h", "-o", "%i %o"], capture_output=True, text=True, check=True, timeout=30)
    assert [line.split()[0] for line in queue.stdout.splitlines() if line.split()[1:] == [str(script)]] == [job_id]

    started(ws, "blip")
    # squeue --json unusable (no JSON plugin at this site): status falls back to scontrol
    fallback = Workspace(ws.root, env=no_json)
    assert "Unable to find plugin: serializer/json" in subprocess.run(
        ["squeue", "--json"], capture_output=True, text=True, env=fallback.env, timeout=30).stderr
    assert fallback.status("blip")["state"] == "RUNNING"
    gate.touch()
    job = ws.wait("blip", timeout_s=60)
    assert (job["state"], job["exit_code"]) == ("SUCCEEDED", 0), ws.log("blip")
    job = fallback.status("blip")
    assert (job["state"], job["exit_code"], job["backend_state"]) == ("SUCCEEDED", 0, "COMPLETED")


def test_an_sbatch_without_reply_is_not_repeated_and_its_hint_finds_the_job(code: Path, quick, gate, tmp_path):
    """slurmctld hangs: sbatch's request waits in the socket, sbatch gives up after MessageTimeout
    ("Socket timed out on send/recv operation"), and slurmctld, going on, accepts the job after
    all. So hpctl submits nothing more, records nothing, and the squeue its message names finds
    the one job."""
    ws = Workspace(tmp_path / "ws", env=quick)
    controller("pause")
    try:
        apply = ws.hpctl("apply", *gated("mute", code, gate), "--auto-approve", check=False)
    finally:
        controller("resume")
    assert apply.returncode == 1, apply.stdout + apply.stderr
    assert "sbatch got no reply from slurmctld: the job may or may not have been submitted" in apply.stderr
    assert "Socket timed out on send/recv operation" in apply.stderr and "trying again" not in apply.stderr
    assert not (ws.root / ".hpctl" / "state.json").exists() or ws.state()["jobs"] == {}

    name = re.search(r"squeue --name=(\S+)`", apply.stderr).group(1)
    deadline, ids = time.monotonic() + 30, []
    while not ids and time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-t", "all", f"--name={name}", "-o", "%i %o"],
                               capture_output=True, text=True, check=True, timeout=30)
        ids = [line.split()[0] for line in queue.stdout.splitlines()
               if line.split()[1:] == [str(ws.results("mute") / "hpctl" / "mute.sbatch")]]
        time.sleep(0.2)
    assert len(ids) == 1, queue.stdout  # accepted once, although sbatch never heard so
    subprocess.run(["scancel", ids[0]], check=True, timeout=30)
