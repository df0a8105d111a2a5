"""The verl contract: hpctl refuses at plan exactly the verl configs verl's own validation refuses.

Each targeted verl (0.5.0, 0.7.1) lives in its own venv, .venv-verl-<version> (verl pins transformers
below the project's); tests/run.sh builds them. tests/verl_contract/driver.py runs verl's validation
there over every HyperPod verl PPO recipe of that version and over generated variants that break one
rule each; hpctl's verdict is hpctl.engines.verl.rules at the VALIDATE stage for the same config and
world size. The two must agree case by case.

Keys only HyperPod's verl images know (marked so in schemas/verl) are taken out before verl sees a
config: upstream verl's dataclasses refuse them, HyperPod's images accept them, and no rule reads them.
Without the venvs the test skips, except under CI, where it fails: CI must run it.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpctl.compose import compose
from hpctl.engines import verl
from hpctl.spec import Spec
from hpctl.workspace import Workspace
from tests.helpers.workspace import REPO
from verl_inputs import V2

pytestmark = [pytest.mark.slow]
VERSIONS = {"0.5": "0.5.0", "0.7": "0.7.1"}
DRIVER = Path(__file__).resolve().parent / "verl_contract" / "driver.py"
ACTOR = ("actor_rollout_ref", "actor")


def venv_python(version: str) -> Path:
    python = REPO / f".venv-verl-{VERSIONS[version]}" / "bin" / "python"
    if not python.is_file():
        reason = f"{python} is missing: tests/run.sh builds it (pip install torch==2.13.0 verl=={VERSIONS[version]})"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return python


@lru_cache(maxsize=None)
def hyperpod_only(version: str) -> tuple[tuple[str, ...], ...]:
    """Key paths schemas/verl marks as HyperPod's images' own (not upstream verl's)."""
    schema = json.loads((REPO / "schemas" / "verl" / f"verl-{version}.schema.json").read_text())
    out: list[tuple[str, ...]] = []

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for key, sub in (node.get("properties") or {}).items():
            if "HyperPod" in sub.get("description", ""):
                out.append((*path, key))
            walk(sub, (*path, key))
    walk(schema, ())
    return tuple(out)


def upstream(config: dict[str, Any], version: str) -> dict[str, Any]:
    out = copy.deepcopy(config)
    for path in hyperpod_only(version):
        node = out
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


@lru_cache(maxsize=1)
def resolved_recipes() -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (verl version, training_config as hpctl resolves it) of HyperPod's verl PPO recipes."""
    out = {}
    for path in sorted((V2 / "recipes").rglob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        engine = verl.engine_of(recipe) if isinstance(recipe, dict) else None
        if engine is None or engine.kind != "ppo":
            continue
        name = path.relative_to(V2 / "recipes").with_suffix("").as_posix()
        spec = compose([f"recipes={name}", "cluster=k8s", "base_results_dir=/r"], None, Workspace(V2), env={})
        out[path.stem] = (engine.version, spec.get("recipes.training_config"))
    return out


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


STATIC = {"actor_rollout_ref.actor.use_dynamic_bsz": False}
# name -> overrides; each breaks (at most) one of verl's rules for most recipes
VARIANTS: dict[str, dict[str, Any]] = {
    "as-is": {},
    "static": STATIC,
    "both-micro": {**STATIC, "actor_rollout_ref.actor.ppo_micro_batch_size": 8,
                   "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 2},
    "no-micro": {**STATIC, "actor_rollout_ref.actor.ppo_micro_batch_size": None,
                 "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": None},
    "odd-batch": {**STATIC, "data.train_batch_size": 9, "actor_rollout_ref.rollout.n": 1,
                  "actor_rollout_ref.actor.ppo_mini_batch_size": 9},
    "batch-below-mini": {**STATIC, "data.train_batch_size": 16, "actor_rollout_ref.actor.ppo_mini_batch_size": 32},
    "micro-not-dividing": {**STATIC, "actor_rollout_ref.actor.ppo_micro_batch_size": 3,
                           "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": None},
    "bad-loss-agg": {"actor_rollout_ref.actor.loss_agg_mode": "token-sum"},
    "cold-sampling": {"actor_rollout_ref.rollout.val_kwargs.do_sample": True, "actor_rollout_ref.rollout.temperature": 0},
    "rollout-both-micro": {**STATIC, "actor_rollout_ref.rollout.log_prob_micro_batch_size": 8,
                           "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 2},
    "lora-rank-1024": {"actor_rollout_ref.model.lora_rank": 1024},
    "ref-no-micro": {**STATIC, "actor_rollout_ref.actor.use_kl_loss": True,
                     "actor_rollout_ref.ref.log_prob_micro_batch_size": None,
                     "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": None},
}


def cases(version: str) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (recipe_version, config) in resolved_recipes().items():
        if recipe_version != version:
            continue
        for variant, overrides in VARIANTS.items():
            case = copy.deepcopy(config)
            for path, value in overrides.items():
                _set(case, path, value)
            out[f"{name}/{variant}"] = upstream(case, version)
    return out


def hpctl_refuses(config: dict[str, Any]) -> list[str]:
    spec = Spec({"cluster_type": "k8s", "recipes": {"run": {"name": "c", "model_type": "verl"},
                                                    "training_config": config}})
    return [r.message for r in verl.rules(spec) if r.stage == verl.VALIDATE]


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_hpctl_refuses_exactly_what_verl_refuses(version, tmp_path):
    python = venv_python(version)
    found = cases(version)
    assert len(found) >= len(VARIANTS) * 20
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(found))
    out = tmp_path / "verdicts.json"
    run = subprocess.run([str(python), str(DRIVER), str(path), str(out)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    verdicts = json.loads(out.read_text())
    disagree = {case: (verdicts[case], hpctl_refuses(config)) for case, config in found.items()
                if (verdicts[case] is not None) != bool(hpctl_refuses(config))}
    assert disagree == {}
    refused = sum(v is not None for v in verdicts.values())
    assert 0 < refused < len(verdicts)  # the variants do break rules, and the recipes as shipped pass
    assert all(verdicts[c] is None for c in verdicts if c.endswith("/as-is"))
