"""Which SageMaker HyperPod recipes hpctl runs, and why not where it cannot.

HyperPod's recipe collection holds recipes for several training stacks. hpctl launches two recipe
formats: v1 Hugging Face recipes (`run.model_type: hf`) and v2 LLM fine-tuning recipes
(`run.model_type: llm_finetuning_aws`). The others need software hpctl does not have; `refusal`
names the key that shows it and says why, so validate refuses such a recipe with one reason
instead of a page of unknown keys.

Fields of v1 hf recipes that belong to SageMaker's closed libraries map to open equivalents, so
they are not refused here: `use_smp_model` (SageMaker model parallelism) runs as FSDP2 plus
hpctl's tensor parallelism, `delayed_param` is the trainer's meta-device initialisation (always
on), `fp8` (Transformer Engine) plans (its planned equivalent is torchao float8 on GPUs, which
the trainer does not implement yet) and `peft_type: qlora_4bit` plans (bitsandbytes on GPUs is
its planned equivalent, not implemented by the trainer yet either). Elastic scaling
(`elastic_policy.is_elastic`) needs HyperPod's closed training operator and has no such
equivalent, so it is refused. Recipes that plan but that hpctl's
own trainer would refuse at start (fp8, QLoRA on CPUs, multimodal models, model families the
trainer lacks) are not refused, since another entry point (git.entry_script) may run them:
`untrainable` names them, and `hpctl recipes check` shows it.

The rules read plain values only, so they work on a resolved spec and on a recipe file's raw data
alike; the raw data matters because some of these recipes use interpolation resolvers that only
HyperPod's launchers define (`${multiply:...}`, `${oc.select:...}`). Pure and torch-free.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hpctl import instances
from hpctl.spec import get_path, join
from hpctl.suggest import did_you_mean

SUPPORTED_MODEL_TYPES = ("hf", "llm_finetuning_aws")
MODEL_TYPE = "recipes.run.model_type"
SUPPORTED = ("hpctl runs HyperPod v1 Hugging Face recipes (run.model_type: hf) and v2 LLM fine-tuning "
             "recipes (run.model_type: llm_finetuning_aws)")

NOVA = "Nova recipes run only on SageMaker's closed Nova training stack"
TRAINIUM = instances.TRAINIUM
MEGATRON = "Megatron/NeMo recipes run on NVIDIA NeMo's Megatron trainer, which hpctl does not launch"

# run.model_type -> (kind, reason)
BY_MODEL_TYPE = {
    "verl": ("verl", "VERL recipes run reinforcement learning (GRPO, PPO) on Ray through the verl "
                     "library; hpctl's trainer does supervised fine-tuning and DPO"),
    "mtrl": ("mtrl", "multi-turn RL (mtrl) recipes need SageMaker's closed rollout and reward "
                     "services; hpctl's trainer does supervised fine-tuning and DPO"),
    "hyperpod_checkpointless_nemo": ("checkpointless", "checkpointless recipes run on NVIDIA NeMo with "
                                     "HyperPod's closed checkpointless-training extensions"),
    "neuron-hf": ("trainium", TRAINIUM),
}
EVALUATION_SECTIONS = ("evaluation", "llm_as_judge")
NOVA_ID = re.compile(r"(^|\.)amazon\.nova-")
NEURON_KEYS = re.compile(r"^(neuron_|compiler_flags$|compiler_cache_url$)")
MEGATRON_KEYS = ("recipes.model.mcore_gpt", "recipes.model.megatron_amp_O2")

# Model families hpctl's trainer builds. This must list exactly the keys of the adapter's table
# (adapter/models.py: ARCHITECTURES); tests/test_compat.py checks that the two agree.
TRAINABLE_FAMILIES = frozenset({
    "llama_v3", "llama_v4", "mistral", "mixtral", "qwen_v2", "deepseek_r1", "deepseek_r1_llama_v3",
    "deepseek_r1_qwen_v2", "gpt_oss", "falcon",
})
# LLMFT recipes name their base model by Hugging Face id; id prefix -> model family, first match wins.
LLMFT_FAMILIES = (
    ("deepseek-ai/DeepSeek-R1-Distill-Llama", "deepseek_r1_llama_v3"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen", "deepseek_r1_qwen_v2"),
    ("meta-llama/Llama-4", "llama_v4"),
    ("meta-llama/Llama-3", "llama_v3"),
    ("Qwen/Qwen2.5", "qwen_v2"),
    ("Qwen/Qwen3", "qwen_v3"),
    ("openai/gpt-oss", "gpt_oss"),
)
LLMFT_MODEL = "recipes.training_config.model_config.model_name_or_path"


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
    if model_type and model_type.startswith("amazon.nova"):
        return Refusal("nova", MODEL_TYPE, NOVA)
    nova = next((path for path, text in _strings(recipe, "recipes") if NOVA_ID.search(text)), None)
    if nova:
        return Refusal("nova", nova, NOVA)
    if model_type in BY_MODEL_TYPE:
        kind, reason = BY_MODEL_TYPE[model_type]
        return Refusal(kind, MODEL_TYPE, reason)
    section = next((s for s in EVALUATION_SECTIONS if s in recipe), None)
    if section:
        return Refusal("evaluation", f"recipes.{section}", "evaluation recipes run SageMaker's evaluation "
                       "containers (benchmarks, LLM-as-judge); hpctl launches training jobs")
    found = _trainium(data, recipe) or _megatron(data, recipe, model_type) or _elastic(data)
    if found is None and model_type is not None and model_type not in SUPPORTED_MODEL_TYPES:
        found = Refusal("model-type", MODEL_TYPE, f"run.model_type {model_type!r} is not a recipe format hpctl runs",
                        did_you_mean(model_type, SUPPORTED_MODEL_TYPES) or SUPPORTED)
    return found


def unsupported_reason(data: dict[str, Any]) -> str | None:
    """Why hpctl cannot launch this spec, in one sentence; None when it can."""
    found = refusal(data)
    return found.reason if found else None


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
    """(model family, the key it comes from) of a v1 or LLMFT recipe; the family is None when unknown."""
    if get_path(data, MODEL_TYPE) == "llm_finetuning_aws":
        name = get_path(data, LLMFT_MODEL)
        found = next((fam for prefix, fam in LLMFT_FAMILIES if isinstance(name, str) and name.startswith(prefix)), None)
        return found, LLMFT_MODEL
    value = get_path(data, "recipes.model.model_type")
    return (value if isinstance(value, str) else None), "recipes.model.model_type"


def untrainable(data: dict[str, Any]) -> Refusal | None:
    """Why hpctl's own trainer would refuse this spec at start, or None when it trains it."""
    found = refusal(data)
    if found:
        return found
    for key in ("recipes.model.multi_modal", "recipes.training_config.model_config.multimodal"):
        if get_path(data, key) is True:
            return Refusal("multimodal", key, "multimodal (vision) training: hpctl's trainer trains text models")
    if get_path(data, "recipes.model.offload_activations") is True:  # adapter/config.py refuses it
        return Refusal("unimplemented", "recipes.model.offload_activations",
                       "activation offloading is not implemented in hpctl's trainer yet",
                       "set model.offload_activations=false")
    if get_path(data, "recipes.model.peft.peft_type") == "qlora_4bit" and \
            str(get_path(data, "recipes.trainer.accelerator") or "gpu").lower() != "cpu":
        return Refusal("unimplemented", "recipes.model.peft.peft_type",
                       "QLoRA 4-bit is not implemented in hpctl's trainer yet (planned: bitsandbytes on GPUs)",
                       "use peft_type: lora")
    if get_path(data, "recipes.model.fp8") is True:  # adapter/config.py refuses it on any device
        return Refusal("fp8", "recipes.model.fp8", "fp8 training is not implemented in hpctl's trainer yet",
                       "set model.fp8=false to train in bf16")
    name, key = family(data)
    value = get_path(data, key)
    if name in TRAINABLE_FAMILIES:
        return _needs_gpu(data)
    if key == LLMFT_MODEL and value in (None, ""):
        return Refusal("model", key, "no base model: model_name_or_path is empty",
                       "set it to a Hugging Face model id or a checkpoint directory")
    if value is None and get_path(data, "recipes.model.hf_model_name_or_path"):
        return _needs_gpu(data)  # the trainer reads the architecture from the checkpoint's config.json
    what = f"model family {name}" if name else f"model {value!r}"
    return Refusal("family", key, f"{what} is not in hpctl's trainer's model table",
                   "trainable families: " + ", ".join(sorted(TRAINABLE_FAMILIES)))


def _needs_gpu(data: dict[str, Any]) -> Refusal | None:
    if str(get_path(data, "recipes.trainer.accelerator") or "gpu").lower() != "cpu":
        return None
    if get_path(data, "recipes.model.peft.peft_type") == "qlora_4bit":
        return Refusal("gpu-only", "recipes.model.peft.peft_type",
                       "QLoRA 4-bit needs GPUs (bitsandbytes kernels); this job runs on CPUs",
                       "use peft_type: lora for a CPU run")
    return None
