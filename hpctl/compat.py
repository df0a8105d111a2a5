"""Which SageMaker HyperPod recipes hpctl runs, and why not where it cannot.

HyperPod's recipe collection holds recipes for several training stacks. hpctl launches three recipe
formats: v1 Hugging Face recipes (`run.model_type: hf`), v2 LLM fine-tuning recipes
(`run.model_type: llm_finetuning_aws`) and v2 reinforcement-learning recipes, which run verl on Ray
(`run.model_type: verl`, hpctl.engines.verl). The others need software hpctl does not have; `refusal`
names the key that shows it and says why, so validate refuses such a recipe with one reason
instead of a page of unknown keys. The recipe families refused outright (Nova, evaluation,
checkpointless, ...) are one table, REFUSED_FAMILIES; compose asks `family_refusal` of the recipe
file before any override, so a launcher script's overrides for a recipe of another kind are never
answered with "key does not exist".

Fields of v1 hf recipes that belong to SageMaker's closed libraries map to open equivalents, so
they are not refused here: `use_smp_model` (SageMaker model parallelism) runs as FSDP2 plus
hpctl's tensor parallelism, and `delayed_param` is the trainer's meta-device initialisation
(always on). Elastic scaling (`elastic_policy.is_elastic`) needs HyperPod's closed training
operator and has no such equivalent, so it is refused. Whether hpctl's own trainer accepts a
recipe of a supported format (fp8, QLoRA, multimodal, a model family) is not decided here: the
trainer's config owns that, and `hpctl plan` asks it (checks.check_trainer).

The rules read plain values only, so they work on a resolved spec and on a recipe file's raw data
alike; the raw data matters because some of these recipes use interpolation resolvers that only
HyperPod's launchers define (`${multiply:...}`, `${oc.select:...}`). Pure and torch-free.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from adapter import evalspec, llmft
from adapter.keypath import get_path, join
from hpctl import custom_script, instances
from hpctl.suggest import did_you_mean

SUPPORTED_MODEL_TYPES = ("hf", llmft.MODEL_TYPE, "verl", custom_script.MODEL_TYPE)
MODEL_TYPE = "recipes.run.model_type"
SUPPORTED = ("hpctl runs HyperPod v1 Hugging Face recipes (run.model_type: hf), v2 LLM fine-tuning "
             "recipes (run.model_type: llm_finetuning_aws) and v2 reinforcement-learning recipes on verl "
             "(run.model_type: verl)")

NOVA = "Nova recipes run only on SageMaker's closed Nova training stack"
TRAINIUM = instances.TRAINIUM
MEGATRON = "Megatron/NeMo recipes run on NVIDIA NeMo's Megatron trainer, which hpctl does not launch"

# The recipe families hpctl refuses, and why: the one table. A family hpctl learns to run (verl on
# Ray, evaluation jobs) loses its row here, and every caller (plan, `recipes check`, the launcher
# script acceptance test) then expects its recipes to plan.
REFUSED_FAMILIES: dict[str, str] = {
    "nova": NOVA,
    "mtrl": "multi-turn RL (mtrl) recipes need SageMaker's closed rollout and reward services; hpctl's trainer "
            "does supervised fine-tuning and DPO",
    "checkpointless": "checkpointless recipes are NVIDIA NeMo 2 recipes that run with HyperPod's closed "
                      "checkpointless-training extensions",
    "llm-judge": evalspec.JUDGE_REASON,  # evaluation recipes run lm-eval (hpctl.engines.evaluation)
    "trainium": TRAINIUM,
}
# run.model_type -> family
BY_MODEL_TYPE = {"verl": "verl", "mtrl": "mtrl", "hyperpod_checkpointless_nemo": "checkpointless",
                 "neuron-hf": "trainium"}
NOVA_ID = re.compile(r"(^|\.)amazon\.nova-")
NEURON_KEYS = re.compile(r"^(neuron_|compiler_flags$|compiler_cache_url$)")
MEGATRON_KEYS = ("recipes.model.mcore_gpt", "recipes.model.megatron_amp_O2")

LLMFT_MODEL = "recipes." + llmft.MC + "model_name_or_path"
VERL_MODEL = "recipes.training_config.actor_rollout_ref.model.path"


@dataclass(frozen=True)
class Refusal:
    """Why hpctl cannot run (or train) a recipe, and the key path in the spec that shows it."""

    kind: str  # a short category for summaries: nova, verl, trainium, ...
    key: str
    reason: str
    hint: str | None = None


def refusal(data: dict[str, Any]) -> Refusal | None:
    """The reason hpctl cannot launch this spec (general config at the top, recipe under
    `recipes`), or None when it is a recipe hpctl runs."""
    recipe = data.get("recipes")
    if not isinstance(recipe, dict):
        return None
    model_type = get_path(data, MODEL_TYPE)
    model_type = model_type if isinstance(model_type, str) else None
    found = family_refusal(recipe)
    if found:
        return found
    found = _trainium(data, recipe) or _megatron(data, recipe, model_type) or _elastic(data)
    if found is None and model_type is not None and model_type not in SUPPORTED_MODEL_TYPES:
        found = Refusal("model-type", MODEL_TYPE, f"run.model_type {model_type!r} is not a recipe format hpctl runs",
                        did_you_mean(model_type, SUPPORTED_MODEL_TYPES) or SUPPORTED)
    return found


def _family(recipe: dict[str, Any], model_type: str | None) -> Refusal | None:
    """The HyperPod recipe family that the recipe's own keys show (Nova, verl, evaluation, ...), with
    the key that shows it; None for the families hpctl runs or cannot tell."""
    if model_type and model_type.startswith("amazon.nova"):
        return Refusal("nova", MODEL_TYPE, NOVA)
    nova = next((path for path, text in _strings(recipe, "recipes") if NOVA_ID.search(text)), None)
    if nova:
        return Refusal("nova", nova, NOVA)
    if model_type in BY_MODEL_TYPE:
        kind = BY_MODEL_TYPE[model_type]
        return Refusal(kind, MODEL_TYPE, REFUSED_FAMILIES.get(kind, ""))
    if evalspec.JUDGE in recipe:  # an LLM-as-judge recipe: no open judge to call
        return Refusal("llm-judge", f"recipes.{evalspec.JUDGE}", REFUSED_FAMILIES.get("llm-judge", ""),
                       evalspec.JUDGE_HINT)
    return None


def family_refusal(recipe: dict[str, Any]) -> Refusal | None:
    """The refusal of a recipe (its file's data) for its family alone: checked before any override
    applies, so a script's overrides for a recipe of another kind never end in "key does not exist"."""
    run = recipe.get("run") if isinstance(recipe.get("run"), dict) else {}
    found = _family(recipe, run.get("model_type") if isinstance(run.get("model_type"), str) else None)
    return found if found and found.kind in REFUSED_FAMILIES else None


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(key path, text) of every string value under node, in file order."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, join(path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, join(path, i))
    elif isinstance(node, str):
        yield path, node


def _trainium(data: dict[str, Any], recipe: dict[str, Any]) -> Refusal | None:
    instance = data.get("instance_type")
    refused = instances.refusal(instance) if isinstance(instance, str) else None  # the catalogue owns this rule
    if refused:
        return Refusal(refused[0], "instance_type", refused[1], instances.REFUSED_HINT)
    neuron = next((key for key in recipe if NEURON_KEYS.match(str(key))), None)
    return Refusal("trainium", f"recipes.{neuron}", TRAINIUM) if neuron else None


def _megatron(data: dict[str, Any], recipe: dict[str, Any], model_type: str | None) -> Refusal | None:
    """NeMo launcher recipes: Megatron model keys, `${training.*}` references or NeMo's resolvers."""
    if model_type in SUPPORTED_MODEL_TYPES:
        return None
    marker = next((key for key in MEGATRON_KEYS if get_path(data, key) is not None), None)
    marker = marker or next((path for path, text in _strings(recipe, "recipes")
                             if "${training." in text or "${multiply:" in text), None)
    return Refusal("megatron", marker, MEGATRON, SUPPORTED) if marker else None


def _elastic(data: dict[str, Any]) -> Refusal | None:
    key = "recipes.elastic_policy.is_elastic"
    if get_path(data, key) is True:
        return Refusal("elastic", key, "elastic training (scaling between min_nodes and max_nodes) needs "
                       "HyperPod's closed training operator; hpctl runs a fixed number of nodes",
                       "set elastic_policy.is_elastic: false and choose trainer.num_nodes")
    return None


def family(data: dict[str, Any]) -> tuple[str | None, str]:
    """(model, the key it comes from) for display: a v1 recipe's model_type, an LLMFT or verl recipe's
    base model id; the model is None when the recipe does not say."""
    recipe = data.get("recipes")
    key = LLMFT_MODEL if isinstance(recipe, dict) and llmft.is_llmft(recipe) else "recipes.model.model_type"
    key = VERL_MODEL if get_path(data, MODEL_TYPE) == "verl" else key
    if evalspec.is_evaluation(recipe):  # the model an evaluation scores
        key = "recipes.run.model_name_or_path"
    value = get_path(data, key)
    if value is None and key == VERL_MODEL:  # verl's SFT/DPO configs name the model under model.path
        key = "recipes.training_config.model.path"
        value = get_path(data, key)
    return (value if isinstance(value, str) and value else None), key
