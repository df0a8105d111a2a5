"""Make schemas/verl/verl-<version>.schema.json from an installed verl's own config files.

How they were made (each targeted verl in its own venv; see tests/run.sh):
    .venv-verl-0.7.1/bin/python schemas/verl/generate.py 0.7 ../shared/peer-recipes/hyperpod
    .venv-verl-0.5.0/bin/python schemas/verl/generate.py 0.5 ../shared/peer-recipes/hyperpod

verl's trainers read Hydra configs that verl ships (verl/trainer/config/). This script composes
each of them with Hydra, as verl's entry points do (the PPO trainer with each model engine, the
SFT trainer with each engine), and writes the union of their keys as a JSON Schema: a mapping verl
declares with keys is closed (`additionalProperties: false`); a mapping verl leaves empty or
null (`override_config: {}`, `engine_kwargs`) and every leaf are open.

HyperPod's verl images carry keys upstream verl lacks (`trainer.merge_lora_on_final_save`,
`custom_reward_function.lambda_arn`, ...). With a recipe collection given, the keys its verl
recipes of this version use beyond verl's are added as open properties marked as HyperPod's
(the highest such key of each path), so HyperPod's own recipes pass and anything else a recipe
adds is refused. Nothing of verl's code is copied: only the key names and their nesting.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import verl
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

# version -> (config name, overrides) composed; the union of their keys is the version's key set
CONFIGS = {
    "0.7": [("ppo_trainer", ["model_engine=dp"]), ("ppo_trainer", ["model_engine=torchtitan"]), ("ppo_trainer", ["model_engine=veomni"]),
            ("ppo_megatron_trainer", []), ("sft_trainer_engine", ["engine=fsdp", "optim=fsdp"]),
            ("sft_trainer_engine", ["engine=megatron", "optim=megatron"])],
    "0.5": [("ppo_trainer", []), ("ppo_megatron_trainer", []), ("sft_trainer", [])],
}
OPEN: dict[str, Any] = {}


def tree(node: Any) -> Any:
    """A nested dict of verl's keys; None marks an open value (a leaf, or an empty mapping)."""
    if isinstance(node, dict) and node:
        return {str(k): tree(v) for k, v in node.items()}
    return None


def union(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: union(a.get(k), b.get(k)) if k in a and k in b else (a.get(k) if k in a else b[k])
                for k in [*a, *(k for k in b if k not in a)]}
    return None  # one side open: open


def verl_keys(version: str) -> Any:
    root = Path(verl.__file__).parent / "trainer" / "config"
    found: Any = {}
    with initialize_config_dir(config_dir=str(root), version_base=None):
        for name, overrides in CONFIGS[version]:
            cfg = compose(config_name=name, overrides=overrides)
            found = union(found, tree(OmegaConf.to_container(cfg, resolve=False)))
    return found


def targets(recipe: dict[str, Any], version: str) -> bool:
    """HyperPod's own rule: verl 0.7 recipes have global_profiler (PPO) or engine (SFT, DPO)."""
    config = recipe.get("training_config") or {}
    return ("0.7" if "global_profiler" in config or "engine" in config else "0.5") == version


def extensions(keys: Any, collection: Path, version: str) -> dict[str, list[str]]:
    """Key path -> the recipes using it, for keys of this version's recipes that verl lacks."""
    out: dict[str, list[str]] = {}

    def walk(node: Any, known: Any, path: str, name: str) -> None:
        if not isinstance(node, dict) or not isinstance(known, dict):
            return
        for k, v in node.items():
            p = f"{path}.{k}" if path else str(k)
            if k not in known:
                out.setdefault(p, []).append(name)
            else:
                walk(v, known[k], p, name)

    for path in sorted((collection / "recipes").rglob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        if isinstance(recipe, dict) and (recipe.get("run") or {}).get("model_type") == "verl" and targets(recipe, version):
            # resolved as the launcher resolves it (`${oc.select:recipes.training_config...}` copies sections)
            config = OmegaConf.create({"recipes": recipe}).recipes.training_config
            walk(OmegaConf.to_container(config, resolve=True), keys, "", path.stem)
    return out


def schema(node: Any, path: str, added: dict[str, list[str]], version: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {"description": f"a verl {version} setting"}
    props = {k: schema(v, f"{path}.{k}" if path else k, added, version) for k, v in node.items()}
    for key, users in added.items():
        parent, _, leaf = key.rpartition(".")
        if parent == path:
            props[leaf] = {"description": f"HyperPod's verl images (not upstream verl {version}); used by "
                                          f"{len(users)} of its recipes"}
    return {"description": f"a verl {version} section", "type": "object", "properties": dict(sorted(props.items())),
            "additionalProperties": False}


def main() -> None:
    version, collection = sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None
    keys = verl_keys(version)
    added = extensions(keys, collection, version) if collection else {}
    out = schema(keys, "", added, version)
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema",
           "$id": f"https://hpctl.example/schemas/verl/verl-{version}.schema.json",
           "title": f"verl {version} trainer config (recipes.training_config)",
           "description": f"the keys verl {verl.__version__}'s own configs declare ({', '.join(sorted({n for n, _ in CONFIGS[version]}))}), "
                          "made by schemas/verl/generate.py", **out}
    dest = Path(__file__).parent / f"verl-{version}.schema.json"
    dest.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(f"{dest}: {len(added)} HyperPod keys")


if __name__ == "__main__":
    main()
