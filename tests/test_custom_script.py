"""HyperPod's custom-script mode (`--config-path/--config-name` with a training_cfg block), read onto
hpctl's custom programs (hpctl/custom_script.py). tests/golden/hyperpod_launcher/custom_script.txt is
what HyperPod's own v1 launcher wrote for the same config and arguments (make.sh)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpctl.compose import compose
from hpctl.entry import entry_point
from hpctl.errors import HpctlError
from hpctl.plan import verify
from hpctl.workspace import Workspace
from helpers.workspace import SHARED

V1 = SHARED / "peer-launchers" / "hyperpod-v1"
GOLDEN = Path(__file__).parent / "golden" / "hyperpod_launcher" / "custom_script.txt"
ARGS = ["training_cfg.entry_script=/fsx/custom_allreduce.py", "container=/fsx/c.sqsh",
        "cluster.cluster_config.slurm_create_submission_file_only=True",
        "+training_cfg.script_args=[--some_args,debug,--n,'1']"]


def _workspace() -> Workspace:
    return Workspace(SHARED / "peer-recipes" / "hyperpod-v1")


def test_hyperpods_custom_slurm_config_plans_what_its_launcher_writes(tmp_path: Path) -> None:
    """Every value HyperPod's own launcher wrote (the golden, made by running it) is read from the
    golden and found in hpctl's script: job name, nodes, processes per node, the program and its args."""
    golden = GOLDEN.read_text().splitlines()
    directives = [line for line in golden if line.startswith("#SBATCH ")]
    per_node = next(line.split("=", 1)[1] for line in golden if line.startswith("PROCESSES_PER_NODE="))
    program, args = golden[-2].removesuffix(" \\"), golden[-1].strip()  # HyperPod passes script_args as one shell string
    assert len(directives) == 2 and per_node.isdigit() and program.endswith(".py") and args  # the golden's shape
    spec = compose([f"--config-path={V1}/launcher_scripts/custom_script", "--config-name=config_slurm",
                    f"base_results_dir={tmp_path}", *ARGS], workspace=_workspace())
    _, artifact = verify(spec)
    text = artifact.text
    assert all(line in text.splitlines() for line in directives), directives
    assert f"--nproc-per-node={per_node}" in text
    assert f"  {program}\n  {args}\n" in text and '--config "$HPCTL_SPEC"' not in text
    assert spec.get("recipes.run.model_type") == "custom_script"
    from hpctl.checks import memory_estimate
    from hpctl.plan import summarize
    assert summarize(spec, memory_estimate(spec))["model"] == "custom program"
    assert spec.notes[0].startswith(f"HyperPod custom-script config {V1}/launcher_scripts/custom_script/config_slurm.yaml")
    assert "training_cfg.entry_script=/fsx/custom_allreduce.py: read as git.entry_script" in spec.notes
    # where a value came from: the config file's own line
    assert str(spec.origin("recipes.trainer.num_nodes")).endswith("config_slurm.yaml:25:12")  # nodes: 2


def test_script_args_in_hyperpods_mapping_form_and_errors_at_the_config_line(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "job.yaml").write_text(
        "training_cfg:\n  entry_module: mypkg.train\n  script_args:\n    - --lr: 0.1\n    - --fast: true\n"
        "  run:\n    name: mine\n    nodes: 1\n    ntasks_per_node: 0\n"
        "cluster:\n  cluster_type: slurm\n  cluster_config: {}\nbase_results_dir: /r\ncontainer: /fsx/c.sqsh\n")
    with pytest.raises(HpctlError) as e:
        verify(compose([f"--config-path={config}", "--config-name=job"], workspace=_workspace()))
    [p] = [p for p in e.value.problems if p.key == "recipes.trainer.devices"]
    assert str(p.origin) == f"{config}/job.yaml:9:22"
    spec = compose([f"--config-path={config}", "--config-name=job", "training_cfg.run.ntasks_per_node=2"],
                   workspace=_workspace())
    assert entry_point(spec, "/r/mine").argv("/spec") == ["-m", "mypkg.train", "--lr", "0.1", "--fast", "true"]


@pytest.mark.slow
def test_a_custom_script_runs_on_the_local_backend(tmp_path: Path) -> None:
    """Plan and apply a custom-script config on the local cluster: torchrun starts the script on
    ntasks_per_node processes with its script_args."""
    script = tmp_path / "hello.py"
    script.write_text("import os, sys\nrank = os.environ['RANK']\n"  # written whole, then renamed: never seen half written
                      "path = os.path.join(sys.argv[2], f'rank{rank}.txt')\n"
                      "with open(path + '.tmp', 'w') as f:\n    f.write(' '.join(sys.argv[1:]))\n"
                      "os.replace(path + '.tmp', path)\n")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "config_local.yaml").write_text(
        f"training_cfg:\n  entry_script: {script}\n  script_args:\n    - --out: {out}\n"
        "  run:\n    name: hello\n    nodes: 1\n    ntasks_per_node: 2\n"
        f"cluster:\n  cluster_type: local\n  cluster_config: {{}}\nbase_results_dir: {tmp_path}/results\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "config.yaml").write_text("base_results_dir: null\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCTL_")}
    cmd = [sys.executable, "-m", "hpctl", "apply", "--auto-approve", "--workspace", str(ws), "--no-color", "--",
           f"--config-path={tmp_path}", "--config-name=config_local"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"script {script}" in p.stdout
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("rank*.txt"))) < 2:
        time.sleep(0.5)
    assert sorted(f.name for f in out.glob("rank*.txt")) == ["rank0.txt", "rank1.txt"], p.stdout[-2000:]
    assert (out / "rank0.txt").read_text() == f"--out {out}"
    status = json.loads(subprocess.run([sys.executable, "-m", "hpctl", "status", "hello", "--json", "--workspace",
                                        str(ws)], capture_output=True, text=True, env=env).stdout)
    assert status["jobs"][0]["name"] == "hello"


def test_a_config_path_without_a_config_name_is_refused() -> None:
    with pytest.raises(HpctlError, match="--config-path needs --config-name"):
        compose([f"--config-path={V1}/launcher_scripts/custom_script", "base_results_dir=/r"], workspace=_workspace())


def test_hyperpods_custom_k8s_config_plans_with_its_script_args(tmp_path: Path) -> None:
    """config_k8s.yaml's own script_args reach the program; its template's `container_mounts: [null]`
    (a Slurm key) says nothing and is not carried."""
    spec = compose([f"--config-path={V1}/launcher_scripts/custom_script", "--config-name=config_k8s",
                    f"base_results_dir={tmp_path}", "training_cfg.entry_script=/fsx/a.py", "container=example.com/i:1",
                    "cluster.instance_type=ml.p5.48xlarge"], workspace=_workspace())
    _, artifact = verify(spec)
    assert '"/fsx/a.py", "--some_args", "debug", "--some_other_args", "1"]' in artifact.text
    assert "container_mounts" not in spec.cluster


def test_the_command_lines_cluster_type_picks_the_cluster_file_bcm_being_slurm(tmp_path: Path) -> None:
    """`cluster.cluster_type=k8s` plans on the k8s cluster file (not the Slurm file the config
    names, relabelled), and HyperPod's `bcm` is Slurm on the command line as in the file."""
    base = [f"--config-path={V1}/launcher_scripts/custom_script", "--config-name=config_slurm",
            f"base_results_dir={tmp_path}", *ARGS[:2]]
    k8s = compose([*base, "cluster.cluster_type=k8s", "container=repo/img:1"], workspace=_workspace())
    assert k8s.cluster_type == "k8s" and "namespace" in k8s.cluster  # the k8s cluster file's keys
    bcm = compose([*base, "cluster.cluster_type=bcm"], workspace=_workspace())
    assert bcm.cluster_type == "slurm"


def test_a_block_that_is_not_a_mapping_is_refused_at_its_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("training_cfg:\n  entry_script: /x.py\n  run: {name: x, nodes: 1, ntasks_per_node: 1}\n"
                      "cluster:\n  cluster_type: slurm\n  cluster_config: [a, b]\n")
    with pytest.raises(HpctlError) as exc:
        compose([f"--config-path={tmp_path}", "--config-name=bad"], workspace=_workspace())
    (problem,) = exc.value.problems
    assert problem.key == "cluster.cluster_config" and problem.origin.line == 6 and "must be a mapping" in str(exc.value)
