"""Hostile values in every free-text field, on every backend, through the real `hpctl plan`.

Each value holds shell metacharacters, quotes, `$()`, backticks, Jinja syntax, `%` (sbatch's
pattern character) and, in a second variant, a newline; each command in it would create a canary
file. For each backend and field, the plan either refuses the value with a located error, or
its artifact is checked:

- scripts (local, Slurm) pass `bash -n`, then run for real under stand-ins for srun, scontrol and
  python (they record their arguments and environment and do nothing else): no canary appears,
  and the value reaches the launched command or its environment byte for byte;
- manifests (Kubernetes) parse as YAML and carry the value byte for byte.

A backend joins by adding a `Target` to TARGETS (the SageMaker backend: its cluster file, fields
and an `execute` that checks its request body).
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.workspace import MINI_RECIPE, REPO

HOSTILE = {
    "metachars": "x'\"; touch CANARY; $(touch CANARY) `touch CANARY` && touch CANARY | {{ 7*7 }} {% raw %} ${HOME} %j \\",
    "newline": "x\ntouch CANARY\n",
}


@dataclass
class Target:
    cluster: str  # built-in cluster file
    fields: list[str]  # spec key paths of free-text values (cluster.* or recipes.* or general keys)
    execute: Callable[[str, dict[str, Any], Path, str], None]  # (artifact text, plan doc, tmp, value)


def _stubs(tmp: Path) -> Path:
    """srun, scontrol and python stand-ins: record argv (NUL-separated) and environment, exit 0."""
    bin_dir = tmp / "stubs"
    bin_dir.mkdir(exist_ok=True)
    record = (f'#!/bin/bash\nprintf "%s\\0" "$@" > "{tmp}/$(basename "$0").argv"\n'
              f'env -0 > "{tmp}/$(basename "$0").env"\n')
    for name in ("srun", "python3", "python"):
        (bin_dir / name).write_text(record + "exit 0\n")
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho node1\n")
    for p in bin_dir.iterdir():
        p.chmod(0o755)
    return bin_dir


def _run_script(text: str, tmp: Path, env: dict[str, str]) -> None:
    script = tmp / "artifact.sh"
    script.write_text(text)
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp, timeout=60,
                          env={"PATH": f"{_stubs(tmp)}:/usr/bin:/bin", "HOME": str(tmp), **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp / "canary").exists(), "a hostile value ran a command"


def _launched(tmp: Path, name: str) -> tuple[list[str], dict[str, str]]:
    argv = (tmp / f"{name}.argv").read_bytes().decode().split("\0")[:-1]
    env = dict(e.split("=", 1) for e in (tmp / f"{name}.env").read_bytes().decode().split("\0") if "=" in e)
    return argv, env


def _reaches(value: str, argv: list[str], env: dict[str, str], spec_file: Path) -> None:
    """The value arrives intact: in an argument, an environment variable or the spec the trainer reads."""
    spec = spec_file.read_text()
    assert any(value in a for a in argv) or value in env.values() or json.dumps(value)[1:-1] in spec


def execute_local(text: str, doc: dict[str, Any], tmp: Path, value: str) -> None:
    for path, content in doc["artifact"]["files"].items():  # what submit writes before starting the script
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(content)
    _run_script(text, tmp, {})
    argv, env = _launched(tmp, "python3")
    assert argv[:2] == ["-m", "torch.distributed.run"]
    _reaches(value, argv, env, Path(doc["artifact"]["results_dir"]) / "job_spec.json")


def execute_slurm(text: str, doc: dict[str, Any], tmp: Path, value: str) -> None:
    for line in text.splitlines():  # sbatch reads each directive as one line
        assert not line.startswith("#SBATCH") or "\n" not in line
    _run_script(text, tmp, {"SLURM_JOB_ID": "7", "SLURM_NNODES": "1", "SLURM_JOB_NODELIST": "node1"})
    argv, env = _launched(tmp, "srun")
    spec = Path(doc["artifact"]["results_dir"]) / "job_spec.json"
    directives = "\n".join(line for line in text.splitlines() if line.startswith("#SBATCH"))
    assert json.loads(spec.read_text()) == doc["spec"]
    assert value.replace("%", "%%") in directives or any(value in a for a in argv) or \
        value in env.values() or json.dumps(value)[1:-1] in spec.read_text()


def execute_k8s(text: str, doc: dict[str, Any], tmp: Path, value: str) -> None:
    documents = [d for d in yaml.safe_load_all(text) if d]
    assert documents and all(isinstance(d, dict) and d.get("kind") for d in documents)

    def strings(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [s for v in node.values() for s in strings(v)] + [str(k) for k in node]
        if isinstance(node, list):
            return [s for v in node for s in strings(v)]
        return [node] if isinstance(node, str) else []
    found = strings(documents)
    assert any(value in s for s in found) or any(json.dumps(value)[1:-1] in s for s in found)


COMMON = ["recipes.run.name", "recipes.exp_manager.name", "env_vars.HOSTILE", "cluster.env.HOSTILE2",
          "recipes.model.data.train_dir", "base_results_dir"]
TARGETS: dict[str, Target] = {
    "local": Target("local", COMMON, execute_local),
    "slurm": Target("slurm", COMMON + ["cluster.partition", "cluster.account", "cluster.qos", "cluster.constraint",
                                       "cluster.reservation", "cluster.job_name_prefix", "cluster.container.image",
                                       "cluster.container.mounts.0", "cluster.srun_args.0", "cluster.workdir",
                                       "cluster.python", "cluster.time"], execute_slurm),
    "k8s": Target("k8s", COMMON + ["cluster.namespace", "cluster.service_account_name", "cluster.annotations.note",
                                   "cluster.image", "container"], execute_k8s),
}


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        if not isinstance(data.get(part), dict):
            data[part] = {}
        data = data[part]
    data[last] = value


def workspace(tmp: Path, backend: str, field: str, value: str) -> Path:
    ws = tmp / "ws"
    general = {"cluster_type": backend, "base_results_dir": f"{tmp}/results", "container": "img:1",
               "env_vars": {"NCCL_DEBUG": "WARN"}}
    cluster = yaml.safe_load((REPO / "clusters" / f"{TARGETS[backend].cluster}.yaml").read_text())
    if backend == "local":
        cluster["python"] = str(tmp / "stubs" / "python3")
    if backend == "slurm":
        cluster["workdir"] = str(tmp / "work")
    recipe = yaml.safe_load(MINI_RECIPE)
    root, _, rest = field.partition(".")
    if root == "cluster":
        if rest.endswith(".0"):
            _set(cluster, rest[:-2], [value])
        else:
            _set(cluster, rest, value)
    elif root == "recipes":
        _set(recipe, rest, value)
    elif field == "base_results_dir":
        general["base_results_dir"] = f"{tmp}/results/{value}"
    else:
        _set(general, field, value)
    for rel, data in {"config.yaml": general, f"clusters/{backend}.yaml": cluster,
                      "recipes/tiny/mini.yaml": recipe}.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(yaml.safe_dump(data, allow_unicode=True))
    return ws


CASES = [(backend, field, name) for backend, target in TARGETS.items() for field in target.fields
         for name in HOSTILE]


@pytest.mark.parametrize("backend,field,variant", CASES, ids=["-".join(c) for c in CASES])
def test_hostile_value(tmp_path: Path, run_cli, backend: str, field: str, variant: str) -> None:
    value = HOSTILE[variant].replace("CANARY", str(tmp_path / "canary"))
    ws = workspace(tmp_path, backend, field, value)
    rc, out, err = run_cli("plan", "mini", "--cluster", backend, "--json", "-w", ws)
    assert rc in (0, 1) and "internal error" not in err and "Traceback" not in err, err
    doc = json.loads(out)
    if rc == 1:  # refused: one located problem per complaint
        assert doc["problems"] and all(p["origin"] or p["key"] for p in doc["problems"]), doc
        return
    TARGETS[backend].execute(doc["artifact"]["text"], doc, tmp_path, value)
    assert not (tmp_path / "canary").exists()
    assert not any(p.name == "canary" for p in tmp_path.rglob("canary"))
