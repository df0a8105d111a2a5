"""The SageMaker container entry, run as SageMaker runs it: two "hosts", each its own /opt/ml.

The request comes from hpctl's own plan (built-in `sagemaker` cluster, the tiny Llama shrunk to 6
steps on 2 nodes x 1 CPU rank); each host runs the request's ContainerEntrypoint +
ContainerArguments unchanged except where the machine differs: /opt/ml is a directory per host
($HPCTL_SM_ROOT), the interpreter is this venv's, and the rendezvous port is a free one. Both hosts'
resourceconfig.json name the same two hosts, mapped to loopback (`127.0.0.1` and `localhost`), so
the first one is the rendezvous address.

Then a retry as SageMaker makes it: the newest checkpoint is dropped (the job "died" after step 4),
each host's /opt/ml/checkpoints gets the union of what both hosts wrote (SageMaker restores the
whole checkpoint S3 prefix onto every instance), the output and model dirs are fresh, and the same
command runs again: the trainer resumes at step 4 and must reproduce steps 5-6 and the exported
weights bit for bit.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from adapter import sagemaker as layout
from hpctl.backends import get_backend
from hpctl.backends.common import rank_lines
from hpctl.compose import compose
from hpctl.workspace import Workspace

from tests.helpers.trainer import REPO, env

HOSTS = ["127.0.0.1", "localhost"]
OVERRIDES = [
    "trainer.devices=1", "trainer.num_nodes=2", "trainer.max_steps=6", "model.train_batch_size=2",
    "exp_manager.checkpoint_callback_params.every_n_train_steps=2", "exp_manager.checkpoint_callback_params.save_top_k=-1",
    "cluster.image=123456789012.dkr.ecr.us-east-1.amazonaws.com/hpctl:1",
    "cluster.role_arn=arn:aws:iam::123456789012:role/hpctl", "instance_type=ml.g5.12xlarge",
    "cluster.sm_jobs_config.output_path=s3://bucket/out", "base_results_dir=/results",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _host_argv(request: dict, root: Path, port: int) -> list[str]:
    """The request's command with /opt/ml moved to the host's root, this venv's python, a free port."""
    argv = [*request["AlgorithmSpecification"]["ContainerEntrypoint"], *request["AlgorithmSpecification"]["ContainerArguments"]]
    argv = [a.replace(layout.ROOT, str(root)) for a in argv]
    argv[0] = sys.executable
    argv[argv.index("--python") + 1] = sys.executable
    argv[argv.index("--master-port") + 1] = str(port)
    return argv


def _launch(hosts: list[Path], request: dict) -> list[str]:
    """Each host's output, which SageMaker would put in that host's CloudWatch stream."""
    port = _free_port()
    procs = [subprocess.Popen(_host_argv(request, root, port), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=env(**request["Environment"], **{layout.ROOT_ENV: str(root)}), text=True)
             for root in hosts]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def _losses(root: Path) -> dict[int, float]:
    lines = (root / layout.OUTPUT_DATA / "metrics.jsonl").read_text().splitlines()
    return {m["step"]: m["loss"] for m in map(json.loads, lines)}


@pytest.mark.slow
def test_two_hosts_train_to_the_end_and_a_retry_resumes_exactly(tmp_path):
    (tmp_path / "ws").mkdir()
    spec = compose(["tiny_llama", *OVERRIDES], "sagemaker", Workspace(tmp_path / "ws"))
    artifact = get_backend(spec.cluster_type).render(spec)
    request = json.loads(artifact.text)
    assert request["ResourceConfig"]["InstanceCount"] == 2
    [spec_text] = artifact.files.values()
    hosts = [tmp_path / f"algo-{i + 1}" for i in range(2)]
    for i, root in enumerate(hosts):
        (root / layout.CHANNELS / layout.SPEC_CHANNEL).mkdir(parents=True)
        (root / layout.CHANNELS / layout.SPEC_CHANNEL / layout.SPEC_FILE).write_text(spec_text)
        (root / layout.RESOURCE_CONFIG).parent.mkdir(parents=True)
        (root / layout.RESOURCE_CONFIG).write_text(json.dumps({"current_host": HOSTS[i], "hosts": HOSTS}))

    outs = _launch(hosts, request)
    first, second = hosts
    # `hpctl logs --rank r` reads host r's stream (one rank per host here) and keeps rank r's lines
    assert "adapter: finished at step 6" in list(rank_lines(outs[0].splitlines(), 0))[-1]
    # rank 1 logs no progress (and, the run being quiet, nothing else): host 2's stream holds no rank 0 line
    assert not list(rank_lines(outs[1].splitlines(), 0))
    assert all(line.startswith("[rank1]: ") for line in outs[1].splitlines() if line.startswith("[rank"))
    straight = _losses(first)
    assert sorted(straight) == [1, 2, 3, 4, 5, 6]
    weights = (first / layout.MODEL / "model.safetensors").read_bytes()  # the export, moved by the first host
    assert (first / layout.MODEL / "config.json").is_file() and not (second / layout.MODEL).exists()
    ran = json.loads((first / layout.OUTPUT_DATA / layout.SPEC_FILE).read_text())["recipes"]["exp_manager"]
    assert ran["checkpoint_dir"] == str(first / layout.CHECKPOINTS)
    assert sorted(p.name for p in (first / layout.CHECKPOINTS / "sharded").iterdir()) == [
        "step_00000002", "step_00000004", "step_00000006"]
    assert any((second / layout.CHECKPOINTS / "sharded" / "step_00000004").iterdir())  # rank 1's own shard

    # the retry: step 6 lost, the S3 prefix (both hosts' files) restored onto each, fresh output
    for root in hosts:
        shutil.rmtree(root / layout.CHECKPOINTS / "sharded" / "step_00000006")
        shutil.rmtree(root / layout.OUTPUT_DATA)
        shutil.rmtree(root / layout.MODEL, ignore_errors=True)
    for src, dst in ((first, second), (second, first)):
        shutil.copytree(src / layout.CHECKPOINTS, dst / layout.CHECKPOINTS, dirs_exist_ok=True)
    _launch(hosts, request)
    resumed = _losses(first)
    assert sorted(resumed) == [5, 6]
    assert resumed == {s: straight[s] for s in (5, 6)}
    assert (first / layout.MODEL / "model.safetensors").read_bytes() == weights
