"""HyperPod `main.py` argument forms that Hydra accepts and hpctl reads its own way.

HyperPod's launcher scripts pass arguments to a Hydra application; a few of them are Hydra's, not
the job's, or lean on Hydra's leniency. hpctl takes each as HyperPod's main.py would and says in
the plan what it amounted to (the notes end up in `Spec.notes`):

- `hydra.*` overrides configure Hydra's own run (its working directory, its output files). hpctl
  has no Hydra run: each known key is accepted with a note saying what it means here (mostly
  nothing); an unknown one is refused with a did-you-mean, as Hydra refuses it.
- A root key that exists only in the recipe (`run.name=x`, which HyperPod's verl scripts pass) is
  read as the recipe's (`recipes.run.name`) with a note; HyperPod's main.py refuses it ("Key 'run'
  is not in struct") but the root has no `run`, so the intent is clear.
- Without `recipes=`, the recipe that the workspace's config.yaml names in its `defaults` list is
  planned, as Hydra composes it (HyperPod's own tests rely on this).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpctl.errors import HpctlError
from hpctl.overrides import Override
from adapter.keypath import get_path
from hpctl.suggest import did_you_mean

# Hydra's keys that HyperPod's launcher scripts and config.yaml set -> what each means for hpctl.
HYDRA_KEYS = {
    "hydra.job.chdir": "Hydra would change into hydra.run.dir before the launcher runs; hpctl reads relative "
                       "paths from the workspace and runs jobs in their results dir, so it changes nothing",
    "hydra.run.dir": "Hydra's own output directory; hpctl writes a job's files under base_results_dir only, "
                     "so it changes nothing",
    "hydra.output_subdir": "where Hydra saves the composed config; hpctl records the spec in its plan and state, "
                           "so it changes nothing",
    "hydra.job.name": "Hydra's job name (its log file names); the job's name is recipes.run.name",
    "hydra.verbose": "Hydra's debug logging; hpctl has --debug",
    "hydra.searchpath": "where Hydra looks for configs; hpctl finds recipes under the workspace's recipes/",
    "hydra.job_logging": "Hydra's logging setup; hpctl does not log through Hydra",
    "hydra.hydra_logging": "Hydra's logging setup; hpctl does not log through Hydra",
    "hydra.mode": "Hydra's run or multirun mode; hpctl plans one job per command",
}


def hydra_note(ov: Override) -> str:
    """The plan's note for a `hydra.*` override, or a located error for a key Hydra has not."""
    known = next((k for k in HYDRA_KEYS if ov.path == k or ov.path.startswith(k + ".")), None)
    if known is None:
        raise HpctlError(f"'{ov.path}' is not a Hydra setting HyperPod's launcher has", origin=ov.origin,
                         key=ov.path, expected=", ".join(HYDRA_KEYS),
                         hint=did_you_mean(ov.path, list(HYDRA_KEYS)))
    return f"{ov.text}: accepted as HyperPod's main.py accepts it; {HYDRA_KEYS[known]}"


def recipe_reading(data: dict[str, Any], ov: Override, root_keys: set[str]) -> Override | None:
    """`run.name=x` at the root, where only the recipe has `run`: the same override of the recipe's
    key, or None when the key is not of that kind."""
    head = ov.path.split(".")[0]
    if head in root_keys or head in data:
        return None
    recipe = data.get("recipes")
    if not isinstance(recipe, dict) or head not in recipe:
        return None
    if ov.kind == "set" and get_path(recipe, ov.path, KeyError) is KeyError:
        return None  # not a key of the recipe either: the ordinary error (with its did-you-mean) applies
    return ov.with_path("recipes." + ov.path)


def default_recipe(defaults: Sequence[Any] | None) -> str | None:
    """The recipe a HyperPod config.yaml's `defaults` list names (`- recipes: training/llama/x`)."""
    for item in defaults or []:
        if isinstance(item, dict) and isinstance(item.get("recipes"), str):
            return item["recipes"]
    return None
