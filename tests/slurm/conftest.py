"""What every test against the single-host Slurm of tests/slurm/cluster.sh needs: the cluster.

Without a reachable cluster these tests skip, except under CI, where they fail: CI must run them.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest


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


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip (fail under CI) unless the test cluster answers with two usable nodes."""
    reason = cluster_unreachable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm tests, but: {reason}", pytrace=False)
        pytest.skip(reason)
