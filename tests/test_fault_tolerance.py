"""Replica-group fault tolerance (trainer.fault_tolerance, torchft) through hpctl on the local
backend: the plan (and Kubernetes' manifest of groups, and its refusals), and the acceptance run:
SIGKILL one group's trainer mid-run; the other group goes on in the same process, the killed one
is restarted alone, heals from its peer and from then on holds bitwise the same parameters after
every commit; the job ends SUCCEEDED."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ft as ft_checks

FT = "trainer.fault_tolerance"


def hpctl(ws: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "hpctl", *args, "--workspace", str(ws), "--no-color"],
                       capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stdout + r.stderr
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def ft_args(port: int, *extra: str) -> list[str]:
    return ["tiny_llama", "--cluster", "local", f"+{FT}.enabled=true", f"+{FT}.replica_groups=2",
            f"+{FT}.lighthouse_port={port}", *extra]


# The lighthouse drops the killed group this long after its last heartbeat: well under its restart
# (torchrun, imports, model build: 4 s or more here), so the survivor trains alone for a while.
HEARTBEAT = f"+{FT}.heartbeat_timeout_s=2"


@pytest.mark.slow
def test_plan_shows_the_groups_and_refuses_what_cannot_split(tmp_path: Path) -> None:
    out = hpctl(tmp_path, "plan", *ft_args(24601)).stdout
    assert "2 replica groups x 1 process (torchft); lighthouse at http://127.0.0.1:24601" in out
    assert "restarted alone" in out and "heals from a live peer" in out
    assert "--nproc-per-node=1" in out and "python -m adapter.lighthouse --port=24601" in out.replace(
        sys.executable, "python")
    assert "drops a silent group after 5 s" in out and "--heartbeat-timeout-ms=5000" in out
    bad = hpctl(tmp_path, "plan", *ft_args(24601, "trainer.devices=3"), check=False)
    assert bad.returncode == 1
    assert f"recipes.{FT}.replica_groups" in bad.stderr and "2 does not divide the world size 3" in bad.stderr
    k8s_args = [*ft_args(24601)[:1], "--cluster", "k8s", *ft_args(24601)[3:], "cluster.image=registry.example/hpctl:1"]
    k8s = hpctl(tmp_path, "plan", *k8s_args).stdout  # a PyTorchJob per group, the lighthouse's Deployment and Service
    assert 'name: "tiny-llama-g0"' in k8s and 'name: "tiny-llama-g1"' in k8s and 'kind: "Deployment"' in k8s
    url = "http://tiny-llama-lighthouse.default.svc:24601"
    assert f'value: "{url}"' in k8s and "restartPolicy: \"OnFailure\"" in k8s and "backoffLimit: 4" in k8s
    assert (f"lighthouse at {url}, which drops a silent group after 5 s; a failed group is restarted alone by "
            "the kubelet under its own PyTorchJob's restartPolicy OnFailure") in " ".join(k8s.split())
    hyperpod = hpctl(tmp_path, "plan", *k8s_args, "cluster.job_kind=HyperPodPyTorchJob", check=False)
    assert hyperpod.returncode == 1
    assert "(cluster.job_kind=HyperPodPyTorchJob): cluster.job_kind: [fault-tolerance]" in hyperpod.stderr
    assert "restart every group at once" in hyperpod.stderr
    uneven = hpctl(tmp_path, "plan", *k8s_args, "trainer.num_nodes=3", check=False)
    assert uneven.returncode == 1 and "2 replica groups do not split 3 nodes" in uneven.stderr
    plain = hpctl(tmp_path, "plan", "tiny_llama", "--cluster", "local").stdout
    assert "fault tolerance" not in plain and "lighthouse" not in plain


@pytest.mark.slow
def test_sigkill_of_one_group_heals_from_the_other(tmp_path: Path) -> None:
    ws, steps = tmp_path, 800  # long enough for the killed group to come back (about 10 s) before the end
    results = ws / "results" / "tiny-llama"
    hpctl(ws, "apply", *ft_args(24602, f"trainer.max_steps={steps}", HEARTBEAT, "+cluster.env.HPCTL_FT_PARAM_DIGEST=1"),
          "--auto-approve")
    ft_checks.wait_for_step(results, 1, 10)
    killed = ft_checks.sigkill_group(1)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        st = json.loads(hpctl(ws, "status", "tiny-llama", "--json").stdout)["jobs"][0]
        if st["state"] in ("SUCCEEDED", "FAILED"):
            break
        time.sleep(2)
    log = (results / "logs" / "stdout.log").read_text()
    assert st["state"] == "SUCCEEDED", log[-3000:]
    assert "replica group 1 exited with code" in log and "restarting it alone (1 of 3)" in log
    assert "=== recovery: replica group 1 rejoined at step" in log
    got = ft_checks.assert_recovered(results, groups=2, ranks=1, max_steps=steps, killed=1)
    assert got["degraded_steps"], "the survivor never trained alone"
    assert all(pid not in ft_checks.trainer_pids(1) for pid in killed)
    last = json.loads((results / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == steps and last["live_groups"] == 2 and last["recoveries"] >= 1
    assert last["steps_with_fewer_groups"] == len(got["degraded_steps"])
    table = hpctl(ws, "status", "tiny-llama").stdout
    words = set(table.replace(",", " ").split())  # the state cell wraps at word breaks where the table is narrow
    assert {"2/2", "groups", "live"} <= words and "recover" in table, table
