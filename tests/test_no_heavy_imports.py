"""validate, plan, explain and recipes never import torch, transformers, kubernetes or boto3.

They run on laptops and login nodes where those are slow to import or absent, so each command
runs in a fresh interpreter and sys.modules is inspected afterwards.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.workspace import REPO

HEAVY = ("torch", "transformers", "kubernetes", "boto3")  # SageMaker plans read botocore's model only

SCRIPT = r"""
import importlib, io, json, os, sys, contextlib
sys.path.insert(0, sys.argv[1])
for name in sys.argv[3:]:
    importlib.import_module(name)
from hpctl.cli import main
HEAVY = tuple(json.loads(os.environ["PROBE_MODULES"]))
results = []
for argv in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    results.append({"argv": argv, "rc": code, "stderr": err.getvalue()[-2000:], "heavy": heavy})
print(json.dumps(results))
"""


def _run(commands: list[list[str]], cwd: Path, preimport: tuple[str, ...] = (),
         modules: tuple[str, ...] = HEAVY) -> list[dict]:
    """Run the commands in one fresh interpreter; each result lists which of `modules` (top-level
    names) were imported by then."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO), json.dumps(commands), *preimport], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PROBE_MODULES": json.dumps(modules)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def _assert_light(results: list[dict]) -> None:
    for r in results:
        assert r["rc"] == 0, r
        assert r["heavy"] == [], f"{' '.join(r['argv'])} imported {r['heavy']}"


@pytest.mark.slow
def test_workspace_recipe_commands_import_nothing_heavy(tiny_workspace):
    ws = str(tiny_workspace())
    _assert_light(_run([
        ["validate", "-w", ws, "mini"],
        ["validate", "-w", ws, "--json", "mini", "trainer.max_steps=3"],
        ["plan", "-w", ws, "--json", "mini"],
        ["plan", "-w", ws, "--no-color", "mini"],
        ["explain", "-w", ws, "mini", "run.results_dir"],
        ["recipes", "list", "-w", ws],
        ["recipes", "list", "-w", ws, "--json"],
        ["recipes", "show", "-w", ws, "mini"],
    ], cwd=Path(ws)))


@pytest.mark.slow
def test_builtin_tiny_recipe_commands_import_nothing_heavy(tmp_path):
    """The built-in catalog from an empty directory, on the local, Slurm and Kubernetes clusters."""
    args = ["tiny/tiny_llama", "trainer.devices=1", "model.shard_degree=1"]  # fits any machine
    ws = str(tmp_path)
    _assert_light(_run([
        ["validate", "-w", ws, *args],
        ["plan", "-w", ws, "--json", *args],
        ["plan", "-w", ws, "--json", "--cluster", "slurm", *args],
        ["plan", "-w", ws, "--json", "--cluster", "k8s", *args, "+cluster.image=example/hpctl:1"],
        ["plan", "-w", ws, "--json", "--cluster", "sagemaker", *args, "cluster.image=example/hpctl:1",
         "cluster.role_arn=arn:aws:iam::123456789012:role/hpctl", "instance_type=ml.g5.12xlarge",
         "cluster.sm_jobs_config.output_path=s3://bucket/out"],
        ["explain", "-w", ws, *args, "model.max_position_embeddings"],
        ["recipes", "list", "-w", ws],
        ["recipes", "show", "-w", ws, "tiny_llama"],
    ], cwd=tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_evaluation_plan_reads_lm_evals_task_index_without_torch(tmp_path, monkeypatch):
    """With the cache off, plan builds lm-eval's task index itself: still no torch or transformers."""
    pytest.importorskip("lm_eval", reason="evaluation recipes need lm-eval (the evaluation extra)")
    monkeypatch.setenv("HPCTL_CACHE", "off")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    tasks = REPO / "tests" / "evaluation" / "tasks"
    _assert_light(_run([
        ["plan", "-w", str(tmp_path), "--json", "evaluation/lm_eval_task", f"run.model_name_or_path={model}",
         "trainer.accelerator=cpu", f"evaluation.task={tasks}"],
        ["plan", "-w", str(tmp_path), "--json", "evaluation/mmlu_zs_cot", f"run.model_name_or_path={model}",
         "+trainer.accelerator=cpu"],
    ], cwd=tmp_path))


@pytest.mark.slow
def test_the_probe_can_see_a_heavy_import(tmp_path):
    """The check above must be able to fail: the same probe run after importing torch sees it."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    [clean] = _run([["--version"]], cwd=tmp_path)
    [dirty] = _run([["--version"]], cwd=tmp_path, preimport=("torch",))
    assert clean["rc"] == dirty["rc"] == 0
    assert clean["heavy"] == [] and "torch" in dirty["heavy"]


@pytest.mark.slow
def test_json_output_never_loads_rich(tmp_path):
    """Machine-readable output (and plain errors) skip rich: it is a third of hpctl's start-up."""
    args = ["tiny/tiny_llama", "trainer.devices=1", "model.shard_degree=1"]
    ws = str(tmp_path)
    results = _run([
        ["plan", "-w", ws, "--json", *args],
        ["plan", "-w", ws, "--json", "--cluster", "slurm", *args],
        ["validate", "-w", ws, "--json", *args],
        ["state", "list", "-w", ws, "--json"],
    ], cwd=tmp_path, modules=("rich",))
    for r in results:
        assert r["rc"] == 0 and r["heavy"] == [], r
    [error] = _run([["plan", "-w", ws, "--json", "tiny/tiny_lama"]], cwd=tmp_path, modules=("rich",))
    assert error["rc"] == 1 and error["heavy"] == [], error
    [text] = _run([["plan", "-w", ws, *args]], cwd=tmp_path, modules=("rich",))
    assert text["rc"] == 0 and "rich" in text["heavy"]  # the probe sees rich where it is used


def test_a_missing_optional_client_or_a_broken_aws_profile_is_a_clear_error(monkeypatch):
    """Where a backend must call its scheduler and its optional client library is not installed,
    or AWS's configuration is broken, the error names the fix: never an internal error."""
    from hpctl.backends import kubernetes, sagemaker
    from hpctl.errors import HpctlError
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile-for-hpctl")
    with pytest.raises(HpctlError) as profile:
        sagemaker.client("sagemaker", "us-east-1")
    assert "no-such-profile-for-hpctl" in profile.value.render() and "AWS_PROFILE" in profile.value.render()
    for module in ("kubernetes", "kubernetes.client", "kubernetes.config", "boto3"):
        monkeypatch.setitem(sys.modules, module, None)  # import of these now raises ImportError
    with pytest.raises(HpctlError) as k8s:
        kubernetes.api_client({})
    assert k8s.value.render().splitlines() == [
        "a Kubernetes cluster needs the kubernetes package", "  hint:     pip install 'hpctl[kubernetes]'"]
    with pytest.raises(HpctlError) as sm:
        sagemaker.client("sagemaker", "us-east-1")
    assert "needs the boto3 package" in sm.value.render() and "hpctl[sagemaker]" in sm.value.render()
