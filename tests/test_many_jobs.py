"""Many jobs: `hpctl status` of 1,000 recorded jobs asks each scheduler once, not once per job;
and the batched Kubernetes call's faults (API 5xx, throttling, connection refused).

Slurm: `squeue`, `scontrol` and `sacct` are stand-ins on PATH (bench/many_jobs.py, which also
times this) that log every call. Kubernetes: the recorded API server of test_k8s_api.py answers
one list call for all the jobs of a namespace. Timings are not asserted here (`python -m bench
--only many_jobs` measures them).
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from bench.many_jobs import FIRST_ID, make_state, stub_slurm
from hpctl.backends.base import RUNNING, SUCCEEDED, UNKNOWN
from hpctl.backends.kubernetes import BACKEND as K8S
from hpctl.errors import HpctlError
from hpctl.state import State
from hpctl.tables import MANY_ROWS
from test_k8s_api import JOBS, contract, kubeconfig, make_spec, record_of  # noqa: F401 - contract is a fixture

N = 1000


def test_status_of_1000_slurm_jobs_asks_slurm_once(tmp_path: Path, run_cli, monkeypatch) -> None:
    ws, calls = tmp_path / "ws", tmp_path / "calls.log"
    make_state(ws / ".hpctl" / "state.json", N, tmp_path / "results")
    stub_slurm(tmp_path / "bin", N, calls)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{Path('/usr/bin')}:{Path('/bin')}")

    rc, out, err = run_cli("status", "--json", "-w", ws)

    assert rc == 0, err
    jobs = {j["name"]: j for j in json.loads(out)["jobs"]}
    assert len(jobs) == N
    assert [jobs[f"job-{i:05d}"]["state"] for i in (0, N // 2 - 1, N // 2, N - 1)] == [RUNNING, RUNNING,
                                                                                       SUCCEEDED, SUCCEEDED]
    asked = calls.read_text().splitlines()
    assert [a.split()[0] for a in asked] == ["squeue", "sacct"]  # once each, for all 1,000
    assert asked[0] == "squeue --json"
    assert asked[1].split()[5] == ",".join(str(FIRST_ID + i) for i in range(N // 2, N))
    state = State.load(ws / ".hpctl" / "state.json")  # the new states were saved, the file reads back
    assert state.jobs["job-00999"].status == SUCCEEDED and state.jobs["job-00000"].status == RUNNING

    calls.unlink()
    rc, out, _ = run_cli("status", "-w", ws)  # the table: plain columns past MANY_ROWS
    assert rc == 0 and len(out.splitlines()) == N + 1 > MANY_ROWS
    assert out.splitlines()[1].split()[:4] == ["job-00000", "slurm", str(FIRST_ID), RUNNING]
    rc, out, _ = run_cli("state", "list", "-w", ws)
    assert rc == 0 and len(out.splitlines()) == N + 1 and out.splitlines()[-1].split()[0] == "job-00999"


def test_squeue_garbage_falls_back_to_sacct_per_batch(tmp_path: Path, run_cli, monkeypatch) -> None:
    """squeue that prints something unparseable: the jobs are looked up in sacct, in one call."""
    ws, calls = tmp_path / "ws", tmp_path / "calls.log"
    make_state(ws / ".hpctl" / "state.json", 20, tmp_path / "results")
    stub_slurm(tmp_path / "bin", 20, calls)
    (tmp_path / "bin" / "squeue.json").write_text('{"jobs": [{"job_id": "x"}, 7, {"job_state": ')
    (tmp_path / "bin" / "sacct.txt").write_text("".join(f"{FIRST_ID + i}|RUNNING|0:0|0\n" for i in range(20)))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    rc, out, err = run_cli("status", "--json", "-w", ws)
    assert rc == 0, err
    assert {j["state"] for j in json.loads(out)["jobs"]} == {RUNNING}
    assert [a.split()[0] for a in calls.read_text().splitlines()] == ["squeue", "sacct"]


def test_kubernetes_status_lists_each_namespace_once(contract, tmp_path: Path) -> None:  # noqa: F811
    recorded, port = contract
    recorded.on("GET", JOBS, "pytorchjob_list.json")
    spec = make_spec(kubeconfig(tmp_path, port))
    records = []
    for name in ("llama-8b", "llama-8b-2", "gone"):
        record = record_of(spec, job_id=f"ml/{name}")
        record.name = name
        records.append(record)

    statuses = K8S.describe_many(records)

    assert recorded.calls() == [("GET", JOBS)]
    assert {k: v.state for k, v in statuses.items()} == {"llama-8b": RUNNING, "llama-8b-2": SUCCEEDED,
                                                        "gone": UNKNOWN}
    assert statuses["gone"].backend_state == "NotFound"


@pytest.mark.parametrize("fixture,code", [("server_error.json", "500"), ("throttled.json", "429")])
def test_kubernetes_api_failure_is_a_clear_error(contract, tmp_path: Path, fixture: str, code: str) -> None:  # noqa: F811
    recorded, port = contract
    recorded.on("GET", JOBS, fixture)
    record = record_of(make_spec(kubeconfig(tmp_path, port)))
    with pytest.raises(HpctlError) as err:
        K8S.describe_many([record])
    text = err.value.render()
    assert f"Kubernetes API error while trying to list pytorchjobs in ml: {code}" in text
    assert "try again shortly" in text


def test_kubernetes_api_server_refusing_connections(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    record = record_of(make_spec(kubeconfig(tmp_path, port)))
    with pytest.raises(HpctlError, match="cannot reach the Kubernetes API server"):
        K8S.describe_many([record])
