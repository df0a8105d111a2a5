"""One rule decides whether a job wants GPUs (adapter.devices.wants_accelerators), and the pre-flight
checks, the memory estimate and every backend's rendering agree with it on every case.

auto follows the node: this machine's GPUs on a local cluster (a CPU-only host runs it on CPU, as
the trainer does), the instance type's GPUs on Slurm, Kubernetes and SageMaker (requested from the
scheduler), and GPUs on a cluster that does not say what its nodes hold.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from typing import Any

import pytest

from adapter.devices import wants_accelerators
from hpctl import checks, memory
from hpctl.backends import get_backend
from hpctl.checks import HostInfo
from hpctl.spec import Spec

CPU_HOST = HostInfo(cpu_count=4, gpu_count=0, memory_gb=16.0)
GPU_HOST = HostInfo(cpu_count=32, gpu_count=8, memory_gb=512.0, gpu_memory_gb=80.0)
P5 = "p5.48xlarge"  # 8 GPUs per node in hpctl's catalogue

CLUSTERS: dict[str, dict[str, Any]] = {
    "local": {"type": "local"},
    "slurm": {"type": "slurm", "python": "python3"},
    "k8s": {"type": "k8s", "namespace": "ml"},
    "sm_jobs": {"type": "sm_jobs", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/hpctl:1",
                "role_arn": "arn:aws:iam::123456789012:role/hpctl", "region": "us-east-1"},
}


def make_spec(cluster: str, accelerator: str | None, instance_type: str | None = None, devices: int = 8) -> Spec:
    trainer: dict[str, Any] = {"num_nodes": 1, "devices": devices, "max_steps": 1}
    if accelerator is not None:
        trainer["accelerator"] = accelerator
    data: dict[str, Any] = {
        "cluster_type": cluster, "container": CLUSTERS["sm_jobs"]["image"], "base_results_dir": "/fsx/results",
        "cluster": dict(CLUSTERS[cluster]),
        "recipes": {"run": {"name": "acc", "results_dir": "/fsx/results/acc"}, "trainer": trainer,
                    "model": {"model_type": "hf"}},
    }
    if instance_type:
        data["instance_type"] = instance_type
    if cluster == "sm_jobs":
        data["cluster"]["sm_jobs_config"] = {"output_path": "s3://bucket/out"}
        data.setdefault("instance_type", P5)
    return Spec(data=data, recipe_name="acc", cluster_name=cluster)


def slurm_requests_gpus(spec: Spec) -> int | None:
    text = get_backend("slurm").render(spec).text
    args = [a for line in text.splitlines() if line.startswith("#SBATCH ") for a in shlex.split(line[8:])]
    found = [a.split("=", 1)[1] for a in args if a.startswith("--gpus-per-node=")]
    return int(found[0]) if found else None


def k8s_requests_gpus(spec: Spec) -> int | None:
    from ruamel.yaml import YAML
    docs = [d for d in YAML(typ="safe").load_all(get_backend("k8s").render(spec).text) if d]
    job = docs[-1]
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    gpus = (master.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu")
    return int(gpus) if gpus is not None else None


# (cluster, accelerator, instance type, host) -> whether the job runs on GPUs, written out by hand.
CASES = [
    (cluster, acc, inst, host, expected)
    for cluster, inst, host, auto in [
        ("local", None, CPU_HOST, False), ("local", None, GPU_HOST, True),
        ("slurm", None, None, True), ("slurm", P5, None, True),
        ("k8s", None, None, True), ("k8s", P5, None, True),
        ("sm_jobs", P5, None, True),
    ]
    for acc, expected in [("cpu", False), ("gpu", True), ("auto", auto), (None, auto)]
]


@pytest.mark.parametrize("cluster,accelerator,instance,host,expected", CASES)
def test_checks_estimate_and_backends_agree(cluster, accelerator, instance, host, expected):
    spec = make_spec(cluster, accelerator, instance)
    est = checks.memory_estimate(spec, host)
    assert est.overhead_gb == memory.OVERHEAD_GB["gpu" if expected else "cpu"]
    if cluster == "local":
        capacity = checks.check_host_capacity(spec, host)
        gpu_error = any(c.severity == checks.ERROR and "GPU processes" in c.message for c in capacity)
        assert gpu_error == (expected and host.gpu_count < 8)
        assert checks.device_memory_gb(spec, host)[1].startswith("host memory") == (not expected)
    elif cluster == "slurm":
        assert slurm_requests_gpus(spec) == (8 if expected else None)
    elif cluster == "k8s":
        assert k8s_requests_gpus(spec) == (8 if expected else None)


def test_slurm_gpus_per_node_zero_is_a_cpu_node():
    spec = make_spec("slurm", "auto")
    spec.data["cluster"]["gpus_per_node"] = 0
    assert slurm_requests_gpus(spec) is None
    assert checks.memory_estimate(spec).overhead_gb == memory.OVERHEAD_GB["cpu"]


def test_auto_with_a_gpu_instance_type_requests_the_instances_gpus():
    for devices in (8, 4):
        assert slurm_requests_gpus(make_spec("slurm", "auto", P5, devices=devices)) == devices
        assert k8s_requests_gpus(make_spec("k8s", "auto", P5, devices=devices)) == devices


def test_the_rule():
    assert [wants_accelerators(a, n) for a in ("gpu", "cpu", "auto") for n in (None, 0, 2)] == [
        True, True, True, False, False, False, True, False, True]


def test_auto_on_a_cpu_only_host_validates_where_gpu_does_not(tmp_path, monkeypatch, run_cli):
    monkeypatch.setattr(checks, "detect_host", lambda: CPU_HOST)
    args = ["validate", "tiny_llama", "--cluster", "local", "trainer.devices=2", "--workspace", tmp_path, "--no-color"]
    code, out, err = run_cli(*args, "trainer.accelerator=auto")
    assert code == 0, out + err
    code, out, err = run_cli(*args, "trainer.accelerator=gpu")
    assert code != 0 and "starts 2 GPU processes but this machine has 0" in out + err


@pytest.mark.slow
def test_auto_runs_on_a_cpu_only_host(tmp_path):
    """The README's first job with trainer.accelerator auto: plan passes and the trainer runs on CPU."""
    if checks.detect_host().gpu_count:
        pytest.skip("this machine has GPUs; the case is a CPU-only host")
    ws = tmp_path / "ws"
    ws.mkdir()
    for args in (["apply", "tiny_llama", "--cluster", "local", "trainer.accelerator=auto", "trainer.max_steps=2",
                  f"base_results_dir={tmp_path / 'results'}", "--auto-approve"], ["logs", "-f", "tiny-llama"]):
        run = subprocess.run([sys.executable, "-m", "hpctl", *args, "--workspace", str(ws), "--no-color"],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
    metrics = next((tmp_path / "results").rglob("metrics.jsonl")).read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1, 2]
