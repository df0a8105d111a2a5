"""The fixture every test against the single-host Slurm of tests/slurm/cluster.sh needs: the cluster
(the controller and workspace helpers are tests/helpers/slurm.py).

Without a reachable cluster these tests skip, except under CI, where they fail: CI must run them.
"""
from __future__ import annotations

import os

import pytest

from tests.helpers.slurm import cluster_unreachable


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip (fail under CI) unless the test cluster answers with two usable nodes."""
    reason = cluster_unreachable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm tests, but: {reason}", pytrace=False)
        pytest.skip(reason)
