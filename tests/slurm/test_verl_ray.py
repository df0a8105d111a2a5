"""verl's launch on a real Ray: the Slurm script hpctl renders for a verl recipe starts a Ray
cluster across both nodes of the test Slurm (n1, n2) and runs the program on its head the way
verl's entry point runs; locally, a single-node Ray started for the job and stopped after it.

verl needs GPUs and vLLM, which these machines lack, so the program is tests/verl_probe.py (the
spec's git.entry_module), started with verl's own arguments: it reports the Ray nodes it saw and
the verl config it read, which must be the recipe's training_config, intact.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from hpctl.backends import get_backend
from hpctl.backends.base import SUCCEEDED, TERMINAL, JobRecord
from hpctl.plan import verify
from hpctl.spec import digest
from test_verl import RLAIF, plan_spec

pytestmark = [pytest.mark.slow]
TESTS = Path(__file__).resolve().parents[1]


def probe_args(results: Path, nodes: int, port: int) -> list[str]:
    return [f"base_results_dir={results}", "container=null", f"++cluster.python={sys.executable}",
            f"+cluster.ray_port={port}", "+git.entry_module=verl_probe", f"+env_vars.PYTHONPATH={TESTS}",
            f"+env_vars.PATH={os.environ['PATH']}", "+recipes.trainer.accelerator=cpu",
            f"recipes.trainer.num_nodes={nodes}", f"recipes.training_config.trainer.nnodes={nodes}",
            "recipes.training_config.trainer.n_gpus_per_node=1"]


def run(spec, timeout_s: float = 240) -> str:
    """Apply's steps for the spec's backend: render (as plan verified), submit, wait; the log."""
    _, artifact = verify(spec)
    backend = get_backend(spec.cluster_type)
    job_id = backend.submit(artifact, {})
    record = JobRecord(name=spec.job_name, cluster=spec.cluster_name, backend=backend.name, job_id=job_id,
                       spec_digest=digest(spec.public_data()), spec=spec.public_data(), artifact=artifact.to_json(),
                       results_dir=artifact.results_dir, logs=artifact.logs, applied_at="")
    deadline = time.monotonic() + timeout_s
    while (status := backend.describe(record)).state not in TERMINAL:
        assert time.monotonic() < deadline, f"job still {status.state}"
        time.sleep(1)
    log = "\n".join(backend.logs(record))
    assert status.state == SUCCEEDED, log
    return log


def probe(log: str) -> dict:
    (line,) = [line for line in log.splitlines() if line.startswith("HPCTL_PROBE ")]
    return json.loads(line.removeprefix("HPCTL_PROBE "))


@pytest.mark.slurm
def test_a_ray_cluster_spans_both_slurm_nodes_and_runs_verls_entry_on_its_head(tmp_path, slurm_cluster):
    spec = plan_spec(RLAIF, *probe_args(tmp_path, 2, 22400), cluster="slurm")
    log = run(spec)
    report = probe(log)
    assert (report["nodes"], report["ran_on"]) == (2, True), log
    assert report["config"] == spec.get("recipes.training_config")
    assert report["address"].endswith(":22400") and "Ray cluster up" in log


def test_a_local_verl_job_starts_ray_for_itself_and_stops_it(tmp_path):
    spec = plan_spec(RLAIF, *probe_args(tmp_path, 1, 22600), "recipes.trainer.devices=1",
                     "++cluster.devices_per_node=1", cluster="local")
    log = run(spec)
    report = probe(log)
    assert (report["nodes"], report["ran_on"], report["address"]) == (1, True, "127.0.0.1:22600")
    assert report["config"] == spec.get("recipes.training_config")
    left = lambda: [p for p in Path("/proc").iterdir() if p.name.isdigit() and _ray_of(p, "22600")]  # noqa: E731
    deadline = time.monotonic() + 30  # the group's processes are signalled as the script ends
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left()


def _ray_of(proc: Path, port: str) -> bool:
    """A process of this job's Ray (its command line names the job's GCS port)."""
    try:
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return f"--port={port}".encode() in cmdline or f":{port}\0".encode() in cmdline or f":{port} ".encode() in cmdline
