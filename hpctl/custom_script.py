"""HyperPod's custom-script mode, read onto hpctl's custom programs.

`main.py --config-path DIR --config-name NAME` (HyperPod's launcher_scripts/custom_script) composes
DIR/NAME.yaml instead of config.yaml: a `training_cfg` block names the program (`entry_script` or
`entry_module`), its `script_args` (a list of `{"--flag": value}` items) and `run.name`, `run.nodes`
x `run.ntasks_per_node`; a `cluster` block names the `cluster_type` and its `cluster_config`; the
rest (base_results_dir, container, container_mounts, git, env_vars) is HyperPod's general config.

hpctl already runs custom programs (hpctl.entry: git.entry_script / git.entry_module, on every
backend), so the file is read as three layers, each leaf keeping its line in the file:
- general: the root keys, `cluster.instance_type` as instance_type, and `git` with the program
  (`training_cfg.entry_script`/`entry_module`) and its arguments as `git.script_args`;
- cluster: the workspace's cluster file of that type (cluster/slurm.yaml...), then `cluster_config`,
  `container_mounts` and `slurm_docker_cfg` over it;
- recipe: `run.name`, `run.results_dir` (default `${base_results_dir}/${.name}`) and
  `run.model_type: custom_script`; `trainer.num_nodes` and `trainer.devices` from `training_cfg.run`.
Overrides then apply to the merged root as HyperPod's do (`training_cfg.entry_script=...` is read as
`git.entry_script`). The plan notes the reading.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapter.keypath import get_path
from hpctl.errors import HpctlError, Origin
from hpctl.loader import Layer, load_file
from hpctl.workspace import Found, Workspace

MODEL_TYPE = "custom_script"
FLAGS = {"--config-path": "path", "-cp": "path", "--config-name": "name", "-cn": "name"}
GENERAL_SKIPPED = ("training_cfg", "cluster", "hydra", "defaults", "container_mounts", "slurm_docker_cfg")
# training_cfg keys -> the spec keys they are read as (overrides of the former are rewritten)
READ_AS = {"training_cfg.entry_script": "git.entry_script", "training_cfg.entry_module": "git.entry_module",
           "training_cfg.script_args": "git.script_args", "training_cfg.run.name": "recipes.run.name",
           "training_cfg.run.results_dir": "recipes.run.results_dir",
           "training_cfg.run.nodes": "recipes.trainer.num_nodes",
           "training_cfg.run.ntasks_per_node": "recipes.trainer.devices",
           "cluster.instance_type": "instance_type",
           "container_mounts": "cluster.container_mounts", "slurm_docker_cfg": "cluster.slurm_docker_cfg"}


def split_flags(args: Sequence[str]) -> tuple[str | None, str | None, list[str]]:
    """(--config-path, --config-name, the other arguments), in Hydra's `--flag=value` and
    `--flag value` forms."""
    found: dict[str, str] = {}
    rest: list[str] = []
    items = iter(args)
    for a in items:
        flag, eq, value = a.partition("=")
        if flag in FLAGS:
            found[FLAGS[flag]] = value if eq else next(items, "")
        else:
            rest.append(a)
    return found.get("path"), found.get("name"), rest


@dataclass
class Custom:
    """The layers a custom-script config is read as, and the files they come from."""

    file: Found
    general: Layer
    cluster_file: Found
    cluster_base: Layer
    cluster_overlay: Layer
    recipe: Layer
    notes: list[str] = field(default_factory=list)


def _sub(origins: dict[str, Origin], src: str, dst: str) -> dict[str, Origin]:
    """The origins under `src` re-rooted at `dst`."""
    out = {}
    for path, origin in origins.items():
        if path == src or path.startswith(src + "."):
            rest = path[len(src):].lstrip(".")
            out[f"{dst}.{rest}" if dst and rest else dst or rest] = origin
    return out


def _given(value: Any) -> bool:
    """Whether a value says anything: not null, not a list or mapping of nulls only."""
    if isinstance(value, list):
        return any(_given(v) for v in value)
    if isinstance(value, dict):
        return any(_given(v) for v in value.values())
    return value is not None


def _script_args(value: Any, origin: Origin | None) -> list[str] | None:
    """HyperPod's `script_args` ([{"--flag": value}, ...]) as an argument list."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise HpctlError("training_cfg.script_args must be a list", origin=origin, key="training_cfg.script_args",
                         expected='a list of {"--flag": value} items or strings', found=type(value).__name__)
    out: list[str] = []
    for item in value:
        if isinstance(item, dict):
            for flag, arg in item.items():
                out += [str(flag)] + ([] if arg is None else [str(arg).lower() if isinstance(arg, bool) else str(arg)])
        elif item is not None:
            out.append(str(item))
    return out


def cluster_type_arg(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the command line's `cluster.cluster_type=T`, the other arguments): it picks the cluster
    file, as the config file's own cluster_type does, so load() takes it rather than an override."""
    found, rest = None, []
    for a in args:
        key, eq, value = a.lstrip("+").partition("=")
        if eq and key == "cluster.cluster_type":
            found = value
        else:
            rest.append(a)
    return found, rest


def _mapping(data: dict[str, Any], key: str, origins: dict[str, Origin], display: str) -> dict[str, Any]:
    """The mapping at `key` of the config file ({} when absent or null), else a refusal at its line."""
    value = get_path(data, key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HpctlError(f"{key} must be a mapping", origin=origins.get(key) or Origin(display), key=key,
                         found=type(value).__name__, expected="a mapping, as in HyperPod's custom-script configs")
    return value


def load(config_path: str, config_name: str | None, ws: Workspace, base: Path,
         cluster_type: str | None = None) -> Custom:
    """Read DIR/NAME.yaml (DIR relative to `base`, as Hydra takes it relative to main.py); the
    cluster type is `cluster_type` (the command line's) when given, else the file's."""
    if not config_name:
        raise HpctlError("--config-path needs --config-name: the config file in it", key="--config-name",
                         expected="--config-path DIR --config-name NAME for DIR/NAME.yaml")
    directory = Path(config_path) if Path(config_path).is_absolute() else base / config_path
    name = config_name if config_name.endswith((".yaml", ".yml")) else config_name + ".yaml"
    path = directory / name
    if not path.is_file():
        raise HpctlError(f"no custom-script config {path}", key="--config-name",
                         expected="--config-path DIR --config-name NAME for DIR/NAME.yaml")
    file = Found(path.resolve(), str(path), Path(name).stem)
    layer = load_file(file.path, file.display)
    data, origins = layer.data, layer.origins
    training = data.get("training_cfg")
    if not isinstance(training, dict):
        raise HpctlError(f"{file.display} has no training_cfg block", origin=Origin(file.display), key="training_cfg",
                         hint="HyperPod's custom-script configs name the program under training_cfg "
                              "(launcher_scripts/custom_script/config_slurm.yaml)")
    cluster = _mapping(data, "cluster", origins, file.display)
    cluster_type = cluster_type or cluster.get("cluster_type")
    if not isinstance(cluster_type, str):
        raise HpctlError("cluster.cluster_type is required", origin=origins.get("cluster") or Origin(file.display),
                         key="cluster.cluster_type", expected="slurm or k8s")
    cluster_type = {"bcm": "slurm"}.get(cluster_type, cluster_type)  # HyperPod's name for Slurm
    run = _mapping(data, "training_cfg.run", origins, file.display)

    general = {k: v for k, v in data.items() if k not in GENERAL_SKIPPED}
    general_origins = {p: o for p, o in origins.items() if p.split(".")[0] not in GENERAL_SKIPPED}
    git = dict(_mapping(data, "git", origins, file.display))
    for key in ("entry_script", "entry_module"):
        if key in training:  # a null one too: HyperPod's configs leave it for the command line
            git[key] = training[key]
            general_origins.update(_sub(origins, f"training_cfg.{key}", f"git.{key}"))
    args = _script_args(training.get("script_args"), origins.get("training_cfg.script_args"))
    if args is not None:
        git["script_args"] = args
        general_origins["git.script_args"] = origins.get("training_cfg.script_args", Origin(file.display))
    general["git"] = git
    if cluster.get("instance_type") is not None:
        general["instance_type"] = cluster["instance_type"]
        general_origins.update(_sub(origins, "cluster.instance_type", "instance_type"))

    overlay = dict(_mapping(data, "cluster.cluster_config", origins, file.display))
    overlay_origins = _sub(origins, "cluster.cluster_config", "")
    for key in ("container_mounts", "slurm_docker_cfg"):
        for where in (key, f"cluster.{key}"):  # v1 keeps them at the root, v2 under cluster
            value = data.get(key) if where == key else cluster.get(key)
            if _given(value):  # HyperPod's templates leave `- null` and empty sections for every cluster type
                overlay[key] = value
                overlay_origins.update(_sub(origins, where, key))

    recipe = {"run": {"name": run.get("name"), "results_dir": run.get("results_dir") or "${base_results_dir}/${.name}",
                      "model_type": MODEL_TYPE},
              "trainer": {"num_nodes": run.get("nodes"), "devices": run.get("ntasks_per_node")}}
    recipe_origins = {**_sub(origins, "training_cfg.run.name", "run.name"),
                      **_sub(origins, "training_cfg.run.results_dir", "run.results_dir"),
                      **_sub(origins, "training_cfg.run.nodes", "trainer.num_nodes"),
                      **_sub(origins, "training_cfg.run.ntasks_per_node", "trainer.devices")}
    cluster_file = ws.cluster(cluster_type)
    note = (f"HyperPod custom-script config {file.display}: runs "
            f"{'git.entry_module' if training.get('entry_module') else 'git.entry_script'} "
            f"(training_cfg's program{', with script_args' if args else ''}) on training_cfg.run.nodes x "
            f"ntasks_per_node, on the {cluster_type} cluster {cluster_file.display} with cluster_config over it")
    return Custom(file, Layer(general, general_origins, file.display), cluster_file,
                  load_file(cluster_file.path, cluster_file.display), Layer(overlay, overlay_origins, file.display),
                  Layer(recipe, recipe_origins, file.display), [note])


def read_as(path: str) -> str | None:
    """The spec key a custom-script override's key is read as (`training_cfg.entry_script` ->
    `git.entry_script`), or None when it is not one of training_cfg's or cluster's."""
    for src, dst in READ_AS.items():
        if path == src or path.startswith(src + "."):
            return dst + path[len(src):]
    if path.startswith("cluster.cluster_config."):
        return "cluster." + path[len("cluster.cluster_config."):]
    return None
