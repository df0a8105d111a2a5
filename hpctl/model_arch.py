"""The architecture fields plan counts with: the checkpoint's, else the hub table's, else the recipe's.

adapter.known_models owns where an architecture is known from (a readable checkpoint's config.json,
then its table of the models HyperPod's recipes name); this module applies it to a spec for the
plan: the fields the parameter count and memory estimate use, the note that says where they came
from (or what the recipe's own fields lack), and the pre-flight error for a recipe field that
contradicts the checkpoint, at that field's line.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adapter import known_models

if TYPE_CHECKING:
    from hpctl.checks import Check, HostInfo
    from hpctl.spec import Spec

EXPERT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts")
# HyperPod model_type values of mixture-of-experts families: without expert fields they count as dense.
MOE_FAMILIES = ("deepseek_r1", "llama_v4", "gpt_oss", "mixtral")


def _recipe(spec_data: Mapping[str, Any]) -> Mapping[str, Any]:
    recipe = spec_data.get("recipes")
    return recipe if isinstance(recipe, Mapping) else spec_data


def _model(recipe: Mapping[str, Any]) -> dict[str, Any]:
    model = recipe.get("model")
    return dict(model) if isinstance(model, Mapping) else {}


def model_path(recipe: Mapping[str, Any]) -> Any:
    """The checkpoint the recipe fine-tunes: v1's hf_model_name_or_path, LLMFT's model_name_or_path."""
    path = _model(recipe).get("hf_model_name_or_path")
    if path:
        return path
    config = ((recipe.get("training_config") or {}).get("model_config") or {}) \
        if isinstance(recipe.get("training_config"), Mapping) else {}
    return config.get("model_name_or_path") if isinstance(config, Mapping) else None


def known(spec_data: Mapping[str, Any]) -> known_models.Known | None:
    return known_models.lookup(model_path(_recipe(spec_data)))


def fields(spec_data: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe's `model` section with the known architecture's shape fields over it."""
    recipe = _recipe(spec_data)
    found = known_models.lookup(model_path(recipe))
    return {**_model(recipe), **found.fields} if found else _model(recipe)


def note(spec_data: Mapping[str, Any]) -> str | None:
    """Where the plan's counts come from, when that is worth saying."""
    recipe = _recipe(spec_data)
    found = known_models.lookup(model_path(recipe))
    if found:
        return f"architecture from the {found.source}"
    model = _model(recipe)
    if model.get("model_type") in MOE_FAMILIES and not any(model.get(k) for k in EXPERT_FIELDS):
        return (f"{model['model_type']} is a mixture-of-experts family, but the recipe's model fields name no experts "
                "and the checkpoint is not readable here: no expert fields: counted as dense")
    return None


def check(spec: "Spec", host: "HostInfo | None") -> list["Check"]:
    """A recipe shape field that the checkpoint it fine-tunes contradicts: the job would build the
    checkpoint's, so the plan's counts and the trainer's checks would describe another model."""
    from hpctl.checks import ERROR, Check
    found = known(spec.data)
    if found is None:
        return []
    return [Check("architecture", ERROR, f"model.{key} is {mine}, but the {found.source} says {theirs}: the job "
                  "builds the checkpoint's model", [f"recipes.model.{key}"],
                  f"remove model.{key} or set it to {theirs}")
            for key, mine, theirs in known_models.contradictions(_model(_recipe(spec.data)), found)]
