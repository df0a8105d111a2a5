"""`hpctl doctor` checks: Slurm against the test cluster, k8s from kubeconfig files, local via the
job's python in a child process (torch never enters hpctl's own process)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hpctl.doctor import run_checks

REPO = Path(__file__).resolve().parents[2]


def by_name(checks):
    return {c.name: c for c in checks}


@pytest.mark.slurm
def test_slurm_checks_pass_on_the_test_cluster():
    checks = by_name(run_checks("slurm", {"partition": "debug"}))
    if not checks["slurmctld answers (scontrol ping)"].ok and not os.environ.get("CI"):
        pytest.skip("the test cluster is not running (tests/slurm/cluster.sh start)")
    assert all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]
    assert checks["Slurm version"].detail.startswith("slurm")
    wrong = by_name(run_checks("slurm", {"partition": "nope"}))["partition 'nope' exists"]
    assert not wrong.ok and "debug" in wrong.fix


def test_slurm_without_sbatch_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    checks = run_checks("slurm", {})
    assert [(c.name, c.ok) for c in checks] == [("sbatch on PATH", False)]
    assert "login node" in checks[0].fix


def write_kubeconfig(path: Path, server: str, current: str | None = "ci") -> None:
    path.write_text(f"""\
apiVersion: v1
kind: Config
clusters:
- name: ci
  cluster: {{server: "{server}"}}
contexts:
- name: ci
  context: {{cluster: ci, user: me}}
users:
- name: me
  user: {{token: x}}
{f"current-context: {current}" if current else ""}
""")


def test_k8s_checks_read_the_kubeconfig_and_probe_the_server_briefly(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = tmp_path / "kubeconfig"
    write_kubeconfig(config, f"https://127.0.0.1:{port}")
    checks = by_name(run_checks("k8s", {"kubeconfig": str(config)}))
    listener.close()
    assert checks["kubeconfig exists"].ok and checks["context set"].ok
    assert checks["API server reachable"].ok
    write_kubeconfig(config, f"https://127.0.0.1:{port}", current=None)
    no_context = by_name(run_checks("k8s", {"kubeconfig": str(config)}))["context set"]
    assert not no_context.ok and "ci" in no_context.fix
    assert by_name(run_checks("k8s", {"kubeconfig": str(config), "context": "ci"}))["context set"].ok


def test_k8s_without_kubeconfig(tmp_path):
    checks = by_name(run_checks("k8s", {"kubeconfig": str(tmp_path / "missing")}))
    assert not checks["kubeconfig exists"].ok and checks["kubeconfig exists"].fix


def test_local_checks_ask_the_jobs_python(tmp_path):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho \'{"torch": "9.9", "cuda": 4}\'\n')
    fake.chmod(0o755)
    checks = by_name(run_checks("local", {"python": str(fake)}))
    assert checks["torch importable in the job's python"].ok
    assert checks["GPUs visible"].detail.startswith("4 CUDA")
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named torch' >&2\nexit 1\n")
    broken.chmod(0o755)
    check = by_name(run_checks("local", {"python": str(broken)}))["torch importable in the job's python"]
    assert not check.ok and "No module named torch" in check.detail and str(broken) in check.fix


def test_unknown_cluster_type():
    (check,) = run_checks("nomad", {})
    assert not check.ok and "slurm" in check.fix


@pytest.mark.slow
def test_doctor_never_imports_torch_into_hpctl():
    code = ("import sys; from hpctl.doctor import run_checks; "
            "checks = run_checks('local', {}); assert checks[0].ok, checks; "
            "assert 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr
