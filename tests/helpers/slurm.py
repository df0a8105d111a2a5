"""Helpers of the tests against the single-host Slurm of tests/slurm/cluster.sh: whether the cluster
can take jobs, its controller stopped and started for fault tests, and a workspace driven through
the CLI. tests/slurm/conftest.py holds the fixture built on them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

CLUSTER_SH = Path(__file__).resolve().parents[1] / "slurm" / "cluster.sh"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def cluster_unreachable() -> str | None:
    """Why the two-node test cluster cannot take jobs, or None when it can."""
    if shutil.which("scontrol") is None:
        return "scontrol not found: start the test cluster with `tests/slurm/cluster.sh start`"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "scontrol/sinfo did not answer within 15 s"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"slurmctld does not answer `scontrol ping`: {(ping.stdout + ping.stderr).strip()}"
    usable = [line for line in nodes.stdout.splitlines() if line.split()[-1] in ("idle", "mixed", "allocated")]
    if len(usable) < 2:
        return f"the tests need two Slurm nodes up; sinfo says: {nodes.stdout.strip() or nodes.stderr.strip()}"
    return None


def controller(action: str) -> None:
    """`cluster.sh ACTION-controller`: only slurmctld stops, starts again (with its saved state),
    pauses (SIGSTOP: it hangs) or resumes; munged, the slurmd's and the jobs they run carry on."""
    subprocess.run(["bash", str(CLUSTER_SH), f"{action}-controller"], check=True, timeout=60)


class Workspace:
    """One hpctl workspace driven through the CLI (`python -m hpctl` subprocesses, with `env`
    added to the environment), remembering each job's states as polled."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **(env or {})}
        self.seen: dict[str, list[str]] = {}

    def hpctl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", "hpctl", *args, "--workspace", str(self.root), "--no-color"],
                           capture_output=True, text=True, timeout=timeout, env=self.env)
        assert "Traceback" not in r.stderr, r.stderr
        if check:
            assert r.returncode == 0, r.stdout + r.stderr
        return r

    def apply(self, name: str, args: list[str]) -> str:
        out = self.hpctl("apply", *args, "--auto-approve").stdout
        assert f"Apply complete: job {name} created as slurm job " in out, out
        return out

    def status(self, name: str) -> dict[str, Any]:
        doc = json.loads(self.hpctl("status", name, "--json").stdout)
        (job,) = doc["jobs"]
        seen = self.seen.setdefault(name, [])
        if not seen or seen[-1] != job["state"]:
            seen.append(job["state"])
        return job

    def wait(self, name: str, until: Callable[[dict[str, Any]], bool] = lambda j: j["state"] in TERMINAL,
             timeout_s: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.status(name)
            if until(job):
                return job
            time.sleep(1)
        pytest.fail(f"job {name}: states {self.seen[name]} after {timeout_s} s\n{self.log(name)}")

    def state(self) -> dict[str, Any]:
        """The state file as JSON (it must always parse)."""
        return json.loads((self.root / ".hpctl" / "state.json").read_text())

    def results(self, name: str) -> Path:
        return self.root / "results" / name

    def metrics(self, name: str) -> list[dict[str, Any]]:
        path = self.results(name) / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def log(self, name: str) -> str:
        return "\n".join(p.read_text() for p in sorted((self.results(name) / "logs").glob("*.out")))
