"""Secrets from every place one can come from never reach any output, on every backend; the job
still receives them; plans and state are private files (issue 10, point 5)."""
from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from hpctl.backends.common import check_no_secrets
from hpctl.compose import compose
from hpctl.errors import HpctlError
from hpctl.workspace import Workspace

from tests.helpers.workspace import LOCAL_CLUSTER

SECRETS = {  # environment variable -> value; each reaches the spec another way (see CONFIG)
    "HF_TOKEN": "hf_secret_from_a_sensitive_env_key",
    "WANDB_API_KEY": "wandb_secret_under_a_plain_key",
    "DB_PASSWORD": "db_secret_in_the_cluster_env",
}
GIT_TOKEN = "ghp_secret_written_in_the_config_file"
CONFIG = f"""\
cluster_type: local
instance_type: null
base_results_dir: results
container: example.com/img:1
git:
  token: {GIT_TOKEN}
env_vars:
  NCCL_DEBUG: WARN
  HF_TOKEN: ${{oc.env:HF_TOKEN}}
  WANDB_KEY: ${{oc.env:WANDB_API_KEY}}
training_config: ${{hydra:runtime.choices.recipes}}
"""
ALL = [*SECRETS.values(), GIT_TOKEN]
FAKE_PYTHON = """#!/bin/sh
env > "$PWD/job_env.txt"
"""


@pytest.fixture
def workspace(tiny_workspace, monkeypatch, tmp_path) -> Path:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    cluster = LOCAL_CLUSTER.replace("python: null", f"python: {fake}") + "env:\n  DB_PASSWORD: ${oc.env:DB_PASSWORD}\n"
    return tiny_workspace({"config.yaml": CONFIG, "clusters/local.yaml": cluster.replace("env: {}\n", "")})


def _files_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(root.rglob("*")) if p.is_file())


def _assert_clean(text: str, where: str) -> None:
    for value in ALL:
        assert value not in text, f"{value} leaked into {where}"


def _job_env(results: Path) -> dict[str, str]:
    """The environment the fake job wrote, read once the job has exited: the file exists from the
    moment the shell opens it, so reading it before the exit marker can see it half written."""
    deadline = time.monotonic() + 30
    while not list((results / "hpctl").glob("exit.*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    text = (results / "job_env.txt").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


CLUSTER_ENV = "+cluster.env.DB_PASSWORD=${oc.env:DB_PASSWORD}"  # the built-in clusters' env is empty


@pytest.mark.parametrize("cluster,extra", [("local", []), ("slurm", ["cluster.workdir=/opt/hpctl", CLUSTER_ENV]),
                                           ("k8s", [CLUSTER_ENV])])
def test_no_secret_in_any_plan_output_or_artifact(workspace, run_cli, tmp_path, cluster, extra):
    args = ["tiny/mini", "--cluster", cluster, "-w", workspace, *extra]
    outputs = {}
    for fmt in (["--no-color"], ["--json"], ["--format", "markdown"]):
        rc, out, err = run_cli("plan", *fmt, *args)
        assert rc == 0, err
        outputs[" ".join(fmt)] = out + err
    saved, artifacts = tmp_path / f"{cluster}.plan", tmp_path / f"artifacts-{cluster}"
    rc, out, err = run_cli("plan", *args, "--out", saved, "--write-artifacts", artifacts)
    assert rc == 0, err
    for what in ("validate", "explain"):
        rc, out, err = run_cli(what, *args, *(["env_vars"] if what == "explain" else []))
        outputs[what] = out + err
    for where, text in outputs.items():
        _assert_clean(text, f"plan {where}")
    _assert_clean(saved.read_text(), "the saved plan")
    _assert_clean(_files_text(artifacts), "the written artifacts")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    doc = json.loads(outputs["--json"])
    # every secret travels by reference: one HPCTL_SECRET_* per spec key
    assert sorted(doc["artifact"]["env"].values()) == ["cluster.env.DB_PASSWORD", "env_vars.HF_TOKEN",
                                                       "env_vars.WANDB_KEY", "git.token"]
    assert doc["spec"]["env_vars"]["WANDB_KEY"] == "(sensitive)"


def test_the_local_job_receives_its_secrets_and_state_keeps_none(workspace, run_cli):
    rc, out, err = run_cli("apply", "tiny/mini", "--cluster", "local", "-w", workspace, "--auto-approve")
    assert rc == 0, err
    _assert_clean(out + err, "apply's output")
    results = workspace / "results" / "mini"
    received = _job_env(results)
    assert received["HF_TOKEN"] == SECRETS["HF_TOKEN"] and received["WANDB_KEY"] == SECRETS["WANDB_API_KEY"]
    assert received["DB_PASSWORD"] == SECRETS["DB_PASSWORD"] and received["HPCTL_SECRET_GIT_TOKEN"] == GIT_TOKEN
    state_dir = workspace / ".hpctl"
    _assert_clean(_files_text(state_dir), "state")
    _assert_clean("\n".join(p.read_text() for p in results.rglob("*") if p.is_file() and p.name != "job_env.txt"),
                  "the files written into the results dir")
    assert stat.S_IMODE((state_dir / "state.json").stat().st_mode) == 0o600


def test_a_secret_where_no_reference_can_go_is_refused(tiny_workspace, monkeypatch):
    for name, value in {**SECRETS, "REGISTRY_TOKEN": "registry_secret_value"}.items():
        monkeypatch.setenv(name, value)
    root = tiny_workspace({"config.yaml": CONFIG.replace("container: example.com/img:1",
                                                         "container: ${oc.env:REGISTRY_TOKEN}")})
    spec = compose(["tiny/mini"], "k8s", Workspace(root))
    with pytest.raises(HpctlError) as err:
        check_no_secrets(spec, ["image: registry_secret_value"])
    assert "container: a secret would be written into the launch artifact" in str(err.value)
    assert "registry_secret_value" not in str(err.value)


SAGEMAKER = ["-c", "sagemaker", "cluster.image=123456789012.dkr.ecr.us-east-1.amazonaws.com/hpctl:1",
             "cluster.role_arn=arn:aws:iam::123456789012:role/hpctl", "instance_type=p5.48xlarge",
             "cluster.sm_jobs_config.output_path=s3://bucket/out"]
SOURCES = ["git.token", "env_vars.HF_TOKEN", "env_vars.WANDB_KEY", "cluster.env.DB_PASSWORD"]


@pytest.mark.parametrize("kept", SOURCES)
def test_sagemaker_refuses_a_secret_from_each_place_without_showing_it(workspace, run_cli, kept):
    """SageMaker keeps a job's environment in clear in its description, so it takes no secret: one
    from each place (a sensitive key, env_vars by sensitive name or by ${oc.env:...}, the cluster's
    env) is a plan error at its key, and neither validate's nor plan's output holds the value."""
    others = [f"~{key}" for key in SOURCES[:3] if key != kept]
    extra = [CLUSTER_ENV] if kept.startswith("cluster.") else []
    for command in ("validate", "plan"):
        rc, out, err = run_cli(command, "tiny/mini", "-w", workspace, *SAGEMAKER, *others, *extra)
        assert rc == 1 and kept in err and "stored in clear" in err, (command, err)
        _assert_clean(out + err, f"sagemaker {command}")
    rc, out, err = run_cli("plan", "tiny/mini", "-w", workspace, *SAGEMAKER, *[f"~{k}" for k in SOURCES[:3]])
    assert rc == 0, err  # the control: without the secret the same job plans


def test_a_saved_plan_keeps_an_environment_reference_given_on_the_command_line(workspace, run_cli, tmp_path):
    """`+env_vars.X_TOKEN=${oc.env:HF_TOKEN}` is what the secrets hint asks for: the saved plan keeps
    the reference (not a value), so its apply reads the variable again and the job receives it. A
    literal secret on the command line is never saved, so applying that plan is refused instead."""
    saved = tmp_path / "ref.plan"
    rc, out, err = run_cli("plan", "tiny/mini", "--cluster", "local", "-w", workspace,
                           "+env_vars.X_TOKEN=${oc.env:HF_TOKEN}", "--out", saved)
    assert rc == 0, err
    assert "+env_vars.X_TOKEN=${oc.env:HF_TOKEN}" in json.loads(saved.read_text())["args"]
    rc, out, err = run_cli("apply", saved, "-w", workspace)
    assert rc == 0, err
    _assert_clean(out + err, "apply's output")
    received = _job_env(workspace / "results" / "mini")
    assert received["X_TOKEN"] == SECRETS["HF_TOKEN"]

    literal = tmp_path / "literal.plan"
    rc, out, err = run_cli("plan", "tiny/mini", "--cluster", "local", "-w", workspace, "trainer.max_steps=3",
                           "+env_vars.Y_TOKEN=typed_in_clear", "--out", literal)
    assert rc == 0, err
    assert "typed_in_clear" not in literal.read_text()
    rc, out, err = run_cli("apply", literal, "-w", workspace)
    assert rc == 1 and "env_vars.Y_TOKEN" in err and "has no value at apply time" in err and "Traceback" not in err


@pytest.mark.parametrize("arg,saved", [
    ("+env_vars.X_TOKEN=${oc.env:HF_TOKEN}", "+env_vars.X_TOKEN=${oc.env:HF_TOKEN}"),
    ("+env_vars.X_TOKEN=${oc.env: HF_TOKEN }", "+env_vars.X_TOKEN=${oc.env: HF_TOKEN }"),  # read as the resolver reads it
    ("+env_vars.X_TOKEN=${oc.env:HF_TOKEN,hf_default_in_clear}", "+env_vars.X_TOKEN=(sensitive)"),  # a default is a value
    ("+env_vars.X_TOKEN=pre${oc.env:HF_TOKEN}", "+env_vars.X_TOKEN=(sensitive)"),
    ("git.token=ghp_typed", "git.token=(sensitive)"), ("trainer.max_steps=3", "trainer.max_steps=3")])
def test_a_saved_plan_keeps_only_bare_environment_references_of_sensitive_keys(arg, saved):
    from hpctl.plan import redact_args
    assert redact_args([arg]) == [saved]
