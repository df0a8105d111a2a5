"""load -> merge -> override -> resolve: the three layers and the command line become one Spec.

Two command-line forms are accepted:
- hpctl's: `RECIPE [key.path=value ...]` with `--cluster NAME`. A key path is relative to the
  recipe (`trainer.max_steps=5`) unless it starts with `recipes.`, `cluster.` or a key of the
  general config (`base_results_dir=/r`, `env_vars.X=1`).
- HyperPod's `main.py` arguments unchanged: `recipes=PATH cluster=NAME cluster_type=slurm
  base_results_dir=/r recipes.run.name=x +cluster.container_mounts.0=/fsx:/fsx`; key paths are
  relative to the merged root.
"""
from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from adapter import evalspec
from adapter.keypath import get_path, join
from hpctl import compat, custom_script, hyperpod_args, instances, interpolate, overrides, scale, standin
from hpctl.backends import MODULES as BACKENDS
from hpctl.errors import HpctlError, Origin
from hpctl.loader import Layer, load_file
from hpctl.merge import merge
from hpctl.spec import Spec
from hpctl.validate import unsupported_problem
from hpctl.workspace import Found, Workspace

HYDRA_ONLY = ("defaults", "hydra")  # Hydra's own bookkeeping: read, never part of the spec
DEFAULT_CLUSTER = "local"


def split_args(args: Sequence[str]) -> tuple[str | None, str | None, list[str], bool]:
    """(recipe, cluster, overrides, hyperpod_form) from the positional arguments."""
    if args and "=" not in args[0] and not args[0].startswith(("~", "+")):
        return args[0], None, list(args[1:]), False
    recipe = cluster = None
    rest = []
    for a in args:
        if a.startswith("recipes="):
            recipe = a.partition("=")[2]
        elif a.startswith("cluster="):
            cluster = a.partition("=")[2]
        else:
            rest.append(a)
    return recipe, cluster, rest, True


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def compose(args: Sequence[str], cluster: str | None = None, workspace: Workspace | None = None,
            env: Mapping[str, str] | None = None) -> Spec:
    """Build the resolved, not yet validated, spec for a command line."""
    ws = workspace or Workspace()
    config_path, config_name, args = custom_script.split_flags(args)
    custom = None
    if config_path or config_name:
        cluster_type, args = custom_script.cluster_type_arg(args)
        custom = custom_script.load(config_path or str(ws.root), config_name, ws, Path.cwd(), cluster_type)
    recipe_name, cluster_arg, override_args, hyperpod = split_args(args)
    general_file = custom.file if custom else ws.general_config()
    general = custom.general if custom else load_file(general_file.path, general_file.display)
    notes: list[str] = list(custom.notes) if custom else []
    if custom:  # HyperPod's custom-script mode: the config file is every layer (hpctl.custom_script)
        hyperpod, recipe_name = True, f"{custom_script.MODEL_TYPE}/{custom.file.name}"
    elif recipe_name is None and hyperpod:  # as Hydra composes HyperPod's config.yaml
        recipe_name = hyperpod_args.default_recipe(general.data.get("defaults"))
        if recipe_name is not None:
            notes.append(f"no recipes= given: the recipe is {recipe_name}, from {general_file.display}'s defaults")
    if recipe_name is None:
        raise HpctlError("no recipe given", expected="hpctl plan RECIPE --cluster NAME, or recipes=PATH",
                         hint="run `hpctl recipes list` to see the recipes")
    if custom:
        cluster_file, cluster_layer = custom.cluster_file, custom.cluster_base
        recipe_file, recipe_layer = Found(custom.file.path, custom.file.display, recipe_name), custom.recipe
    else:
        cluster_name = cluster or cluster_arg or _cluster_of_type(override_args, ws) or _default_cluster(general)
        cluster_file = ws.cluster(cluster_name)
        recipe_file = ws.recipe(recipe_name)
        cluster_layer = load_file(cluster_file.path, cluster_file.display)
        recipe_layer = load_file(recipe_file.path, recipe_file.display)
    family = compat.family_refusal(recipe_layer.data)  # before overrides meant for a recipe of that kind
    if family:
        key = family.key.removeprefix("recipes.")
        raise HpctlError(unsupported_problem(family, recipe_layer.origins.get(key), get_path(recipe_layer.data, key)))

    overlay = [("cluster", custom.cluster_overlay)] if custom else []  # cluster_config over the cluster file
    data, origins = merge([("", general), ("cluster", cluster_layer), *overlay, ("recipes", recipe_layer)])
    for key in HYDRA_ONLY:
        data.pop(key, None)
        origins = {p: o for p, o in origins.items() if p != key and not p.startswith(key + ".")}
    _set_cluster_type(data, origins, cluster_file.name, cluster_layer)

    parsed = [overrides.parse(text, i) for i, text in enumerate(override_args, start=1)]
    root_keys = set(general.data) | {"recipes", "cluster", "cluster_type"}
    for ov in parsed:
        if ov.path.split(".")[0] == "hydra":  # Hydra's own settings: noted, never part of the spec
            notes.append(hyperpod_args.hydra_note(ov))
            continue
        if custom and (read_as := custom_script.read_as(ov.path)) is not None:
            notes.append(f"{ov.text}: read as {read_as}")
            ov = ov.with_path(read_as)
        elif not hyperpod and ov.path.split(".")[0] not in root_keys:
            ov = ov.with_path("recipes." + ov.path)
        elif hyperpod and (read := hyperpod_args.recipe_reading(data, ov, root_keys)) is not None:
            notes.append(f"{ov.text}: read as {read.path} (the root has no '{ov.path.split('.')[0]}')")
            ov = read
        overrides.apply(data, ov, origins)
    scale.apply(data, origins)  # the v2 preset for the chosen node count; overrides still win

    found = compat.refusal(data)  # before resolving: some of these recipes use resolvers only HyperPod's launchers define
    if found:
        raise HpctlError(unsupported_problem(found, origins.get(found.key), get_path(data, found.key)))
    _apply_defaults(data, origins, ws.root)
    choices = {"recipes": recipe_file.name, "cluster": cluster_file.name}
    resolver = interpolate.Resolver(data, origins, choices, os.environ if env is None else env)
    resolved, chains = resolver.resolve_all()
    _apply_recipe_overrides(resolved, chains)
    _require_absolute_results(resolved, chains)
    instances.fill_cluster(resolved, chains)
    notes += filter(None, [standin.note(resolved)])
    inputs = {f.display: _digest(f.path) for f in (general_file, cluster_file, recipe_file)}
    return Spec(resolved, chains, recipe_file.name, cluster_file.name, inputs,
                secret_paths=frozenset(resolver.secret_paths), notes=tuple(notes))


def _cluster_of_type(args: Sequence[str], ws: Workspace) -> str | None:
    """HyperPod's form with `cluster_type=T` and no `cluster=`: the workspace's cluster file named T.
    HyperPod's evaluation scripts pass only cluster_type (k8s); its launcher then reads a few keys
    of whatever cluster file the defaults name (slurm), where hpctl needs the cluster it launches on."""
    wanted = next((a.partition("=")[2] for a in args if a.startswith("cluster_type=")), None)
    return wanted if wanted and wanted in ws.clusters() else None


def _default_cluster(general: Layer) -> str:
    """HyperPod's config.yaml names its cluster in the defaults list (`- cluster: slurm`)."""
    for item in general.data.get("defaults") or []:
        if isinstance(item, dict) and isinstance(item.get("cluster"), str):
            return item["cluster"]
    return DEFAULT_CLUSTER


def cluster_type_of(cluster: dict, name: str) -> str | None:
    """A cluster file's type: its own `type`, else its name when that is a type (None: neither).
    compose sets the spec's cluster_type from it, and doctor picks its checks by it."""
    if isinstance(cluster.get("type"), str):
        return cluster["type"]
    return name if name in BACKENDS else None


def _set_cluster_type(data: dict, origins: dict[str, Origin], name: str, layer: Layer) -> None:
    """The cluster's type (cluster_type_of); overrides come after this."""
    ctype = cluster_type_of(layer.data, name)
    if ctype is not None:
        data["cluster_type"] = ctype
        own = isinstance(layer.data.get("type"), str)
        origins["cluster_type"] = layer.origins.get("type", Origin()) if own else Origin()


def _apply_defaults(data: dict, origins: dict[str, Origin], root: Path) -> None:
    """Values HyperPod's launcher fills in (a results base, the experiment dir) and relative paths
    made absolute against the workspace, before interpolation so every derived dir agrees."""
    if data.get("base_results_dir") in (None, ""):
        data["base_results_dir"] = "results"
        origins["base_results_dir"] = Origin()
    if isinstance(data["base_results_dir"], str) and "${" not in data["base_results_dir"]:
        data["base_results_dir"] = str((root / data["base_results_dir"]).resolve()) \
            if not os.path.isabs(data["base_results_dir"]) else data["base_results_dir"]
    run = get_path(data, "recipes.run")
    if isinstance(run, dict) and evalspec.is_evaluation(data.get("recipes")) and run.get("results_dir") in (None, ""):
        run["results_dir"] = "${base_results_dir}/${.name}"  # HyperPod's evaluation recipes do not name one
        origins["recipes.run.results_dir"] = Origin()
    if isinstance(run, dict) and isinstance(run.get("results_dir"), str) and "${" not in run["results_dir"] \
            and not os.path.isabs(run["results_dir"]):
        run["results_dir"] = str((root / run["results_dir"]).resolve())
    exp = get_path(data, "recipes.exp_manager")
    if isinstance(exp, dict) and exp.get("exp_dir") in (None, ""):
        exp["exp_dir"] = "${recipes.run.results_dir}"
        origins["recipes.exp_manager.exp_dir"] = Origin()


RECIPE_OVERRIDES = "cluster.sm_jobs_config.recipe_overrides"


def _apply_recipe_overrides(data: dict, chains: dict[str, list[Origin]]) -> None:
    """HyperPod's sm_jobs `recipe_overrides`, deep-merged into the resolved recipe (as its launcher
    merges them into the recipe.yaml it wrote). Each overridden leaf keeps the origin of the line
    in the cluster config that set it, so `explain` and errors point there."""
    overrides = get_path(data, RECIPE_OVERRIDES)
    if overrides is None:
        return
    if not isinstance(overrides, dict) or not isinstance(data.get("recipes"), dict):
        raise HpctlError("recipe_overrides must be a mapping of recipe keys", key=RECIPE_OVERRIDES,
                         origin=(chains.get(RECIPE_OVERRIDES) or [None])[0], found=type(overrides).__name__)

    def into(dst: dict, src: dict, rel: str) -> None:
        for key, value in src.items():
            here = join(rel, key)
            if isinstance(value, dict) and isinstance(dst.get(key), dict):
                into(dst[key], value, here)
                continue
            target, source = join("recipes", here), join(RECIPE_OVERRIDES, here)
            for p in [p for p in chains if p == target or p.startswith(target + ".")]:
                del chains[p]
            dst[key] = copy.deepcopy(value)
            for p, chain in list(chains.items()):
                if p == source or p.startswith(source + "."):
                    chains[target + p[len(source):]] = list(chain)

    into(data["recipes"], overrides, "")


def _require_absolute_results(data: dict, chains: dict[str, list[Origin]]) -> None:
    """A results dir built by interpolation from relative parts would move with the cwd: refuse it."""
    value = get_path(data, "recipes.run.results_dir")
    if isinstance(value, str) and not os.path.isabs(value):
        chain = chains.get("recipes.run.results_dir") or [Origin()]
        raise HpctlError("run.results_dir must be an absolute path", origin=chain[0], key="recipes.run.results_dir",
                         found=value, hint="write it as a plain path (relative paths are taken from the workspace) "
                         "or build it from base_results_dir")
