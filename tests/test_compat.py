"""hpctl.compat: which HyperPod recipes hpctl refuses and why, located at the key that decides it.

The rules are checked on plain data first (one case per reason), then through compose + validate
on files in a small workspace, so the message names the file:line (or override) that decides.
"""
from __future__ import annotations

import copy

import pytest

from hpctl import compat
from hpctl.compose import compose
from hpctl.errors import HpctlError
from hpctl.validate import validate
from hpctl.workspace import Workspace
from tests.helpers.workspace import MINI_RECIPE

HF = {"run": {"name": "x", "model_type": "hf"}, "trainer": {"accelerator": "gpu"},
      "model": {"model_type": "llama_v3"}}
LLMFT = {"run": {"name": "x", "model_type": "llm_finetuning_aws"},
         "training_config": {"model_config": {"model_name_or_path": "meta-llama/Llama-3.2-1B-Instruct"}}}

# A minimal v2 LLM fine-tuning recipe for the tiny workspace (CPU, so pre-flight checks pass here).
LLMFT_RECIPE = """\
run:
  name: mini-llmft
  results_dir: ${base_results_dir}/${.name}
  model_type: llm_finetuning_aws
trainer:
  devices: 1
  num_nodes: 1
  accelerator: cpu
training_config:
  datasets:
    preprocessor_cfgs:
    - type: SequenceLengthFilter
      max_seq_length: 64
      tokens_labels: [input_ids]
  model_config:
    model_name_or_path: meta-llama/Llama-3.2-1B-Instruct
    peft_config:
      peft_type: lora
      r: 8
      lora_alpha: 16
      target_modules: all-linear
  training_args:
    trainer_type: sft
    max_len: 64
    trainer_callbacks:
    - _target_: metering_callback.MeteringCallback
      output_path: /opt/ml/metering
"""

NOVA_RECIPE = """\
run:
  name: nova-sft
  model_type: amazon.nova-micro-v1:0:128k
  model_name_or_path: nova-micro/prod
training_config:
  max_length: 8192
"""


def spec(recipe: dict, **top) -> dict:
    return {"recipes": copy.deepcopy(recipe), **top}


def with_value(recipe: dict, path: str, value) -> dict:
    out = copy.deepcopy(recipe)
    *parents, leaf = path.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


@pytest.mark.parametrize("data, kind, key, words", [
    (spec(with_value(HF, "run.model_type", "amazon.nova-pro-v1:0:300k")), "nova", "recipes.run.model_type",
     "Nova recipes run only on SageMaker's closed Nova training stack"),
    (spec({"run": {"name": "distill"}, "training_config": {"teacherModelId": "us.amazon.nova-pro-v1:0"}}), "nova",
     "recipes.training_config.teacherModelId", "closed Nova training stack"),
    (spec(with_value(HF, "run.model_type", "mtrl")), "mtrl", "recipes.run.model_type", "multi-turn RL"),
    (spec(with_value(HF, "run.model_type", "hyperpod_checkpointless_nemo")), "checkpointless",
     "recipes.run.model_type", "checkpointless-training extensions"),
    (spec({"run": {"name": "e"}, "llm_as_judge": {"metrics": ""}}), "llm-judge", "recipes.llm_as_judge",
     "LLM-as-judge evaluation needs a judge model endpoint"),
    (spec(with_value(HF, "run.model_type", "neuron-hf")), "trainium", "recipes.run.model_type", "neuronx-distributed"),
    (spec(HF, instance_type="trn1.32xlarge"), "trainium", "instance_type", "Neuron devices"),
    (spec(with_value(HF, "neuron_rt_exec_timeout", 100)), "trainium", "recipes.neuron_rt_exec_timeout", "Neuron"),
    (spec({"run": {"name": "m"}, "model": {"mcore_gpt": True}}), "megatron", "recipes.model.mcore_gpt",
     "NeMo's Megatron trainer"),
    (spec({"run": {"name": "m"}, "exp_manager": {"explicit_log_dir": "${training.run.results_dir}/results"}}),
     "megatron", "recipes.exp_manager.explicit_log_dir", "Megatron/NeMo"),
    (spec({"run": {"name": "m"}, "exp_manager": {"mp": "${multiply:2, 4}"}}), "megatron", "recipes.exp_manager.mp",
     "Megatron/NeMo"),
    (spec(with_value(LLMFT, "elastic_policy.is_elastic", True)), "elastic", "recipes.elastic_policy.is_elastic",
     "HyperPod's closed training operator"),
    (spec(with_value(HF, "run.model_type", "hff")), "model-type", "recipes.run.model_type",
     "'hff' is not a recipe format hpctl runs"),
])
def test_each_refusal_names_its_kind_key_and_reason(data, kind, key, words):
    found = compat.refusal(data)
    assert (found.kind, found.key) == (kind, key)
    assert words in found.reason


@pytest.mark.parametrize("data", [
    spec(HF), spec(LLMFT), spec(HF, instance_type="p5.48xlarge"),
    spec(with_value(HF, "use_smp_model", True)),  # SageMaker model parallelism runs as FSDP2
    spec(with_value(with_value(HF, "model.fp8", True), "model.delayed_param", True)),  # torchao float8, meta init
    spec(with_value(HF, "model.peft", {"peft_type": "qlora_4bit"})),  # bitsandbytes on GPUs
    spec(with_value(HF, "model.multi_modal", True)),  # a format hpctl runs; the trainer's config decides the rest
    spec(with_value(LLMFT, "elastic_policy.is_elastic", False)),
    spec({"run": {"name": "no-model-type"}, "model": {"model_type": "llama_v3"}}),  # left to the schema
    spec({"run": {"name": "e"}, "evaluation": {"task": "mmlu"}}),  # lm-eval runs it (adapter.evalspec)
])
def test_recipes_hpctl_runs_are_not_refused(data):
    assert compat.refusal(data) is None


def test_the_unknown_model_type_hint_suggests_the_closest_format():
    found = compat.refusal(spec(with_value(HF, "run.model_type", "llm_finetuning_aw")))
    assert found.hint == "did you mean 'llm_finetuning_aws'?"


@pytest.mark.parametrize("data, model", [
    (spec(HF), "llama_v3"),
    (spec(LLMFT), "meta-llama/Llama-3.2-1B-Instruct"),
    (spec(with_value(LLMFT, "training_config.model_config.model_name_or_path", "")), None),
])
def test_family_names_the_model_for_display(data, model):
    assert compat.family(data)[0] == model


# ------------------------------------------------------------ through compose and validate
def refusal_problem(ws, args):
    with pytest.raises(HpctlError) as exc:
        validate(compose(args, None, Workspace(ws), env={}))
    assert len(exc.value.problems) == 1
    return exc.value.problems[0]


def test_validate_refuses_a_nova_recipe_at_its_model_type_line(tiny_workspace):
    ws = tiny_workspace({"recipes/nova/sft.yaml": NOVA_RECIPE})
    p = refusal_problem(ws, ["nova/sft"])
    assert p.message == "unsupported recipe: Nova recipes run only on SageMaker's closed Nova training stack"
    assert (p.key, p.origin.file, p.origin.line) == ("recipes.run.model_type", "recipes/nova/sft.yaml", 3)
    assert p.found == '"amazon.nova-micro-v1:0:128k"'
    assert "llm_finetuning_aws" in p.hint


def test_validate_refuses_before_the_schema_would_list_unknown_keys(tiny_workspace):
    """The Nova recipe has no trainer or model section: one reason, not a list of schema errors."""
    ws = tiny_workspace({"recipes/nova/sft.yaml": NOVA_RECIPE})
    with pytest.raises(HpctlError) as exc:
        validate(compose(["nova/sft"], None, Workspace(ws), env={}))
    assert [p.key for p in exc.value.problems] == ["recipes.run.model_type"]


def test_a_trainium_instance_type_is_refused_at_the_override(tiny_workspace):
    p = refusal_problem(tiny_workspace(), ["mini", "instance_type=trn1.32xlarge"])
    assert p.key == "instance_type"
    assert (p.origin.override, p.origin.text) == (1, "instance_type=trn1.32xlarge")
    assert "Trainium" in p.message


def test_a_verl_recipe_is_not_refused_as_a_format():
    """verl recipes run on Ray (hpctl.engines.verl): compat has no reason to refuse them."""
    assert compat.refusal(spec({"run": {"name": "grpo", "model_type": "verl"}, "training_config": {}})) is None


def test_an_elastic_llmft_recipe_is_refused_where_is_elastic_is_written(tiny_workspace):
    recipe = LLMFT_RECIPE + "elastic_policy:\n  is_elastic: true\n  min_nodes: 1\n"
    p = refusal_problem(tiny_workspace({"recipes/ft/sft.yaml": recipe}), ["ft/sft"])
    assert (p.key, p.origin.line) == ("recipes.elastic_policy.is_elastic", LLMFT_RECIPE.count("\n") + 2)


def test_a_v1_recipe_validates_as_before(tiny_workspace):
    validate(compose(["mini"], None, Workspace(tiny_workspace()), env={}))


# ------------------------------------------------------------ the LLMFT schema
def test_a_minimal_llmft_recipe_is_valid(tiny_workspace):
    ws = tiny_workspace({"recipes/ft/sft.yaml": LLMFT_RECIPE})
    spec_ = compose(["ft/sft"], None, Workspace(ws), env={})
    validate(spec_)


def schema_problems(ws, *args):
    with pytest.raises(HpctlError) as exc:
        validate(compose(["ft/sft", *args], None, Workspace(ws), env={}))
    return [(p.key, p.message) for p in exc.value.problems]


def test_unknown_keys_in_llmft_sections_are_errors(tiny_workspace):
    ws = tiny_workspace({"recipes/ft/sft.yaml": LLMFT_RECIPE})
    assert schema_problems(ws, "+recipes.training_config.training_args.lr=1", "+trainer.max_step=3") == [
        ("recipes.trainer.max_step", "unknown key 'max_step'"),
        ("recipes.training_config.training_args.lr", "unknown key 'lr'")]


def test_llmft_enums_and_types(tiny_workspace):
    ws = tiny_workspace({"recipes/ft/sft.yaml": LLMFT_RECIPE})
    found = schema_problems(ws, "recipes.training_config.training_args.trainer_type=ppo",
                            "recipes.training_config.model_config.peft_config.r=0", "trainer.devices=two")
    assert found == [("recipes.trainer.devices", "wrong type"),
                     ("recipes.training_config.model_config.peft_config.r", "0 is less than the minimum of 1"),
                     ("recipes.training_config.training_args.trainer_type", "value not allowed")]


def test_llmft_callbacks_and_preprocessors_stay_open_but_are_typed(tiny_workspace):
    ws = tiny_workspace({"recipes/ft/sft.yaml": LLMFT_RECIPE})
    validate(compose(["ft/sft", "+recipes.training_config.datasets.preprocessor_cfgs.0.anything=1",
                      "+recipes.training_config.training_args.trainer_callbacks.0.more=x"], None, Workspace(ws), env={}))
    assert schema_problems(ws, "recipes.training_config.datasets.preprocessor_cfgs.0.type=Tokenize") == [
        ("recipes.training_config.datasets.preprocessor_cfgs.0.type", "value not allowed")]


def test_an_llmft_recipe_is_not_checked_against_the_v1_schema(tiny_workspace):
    """The v1 schema requires a model section; an LLMFT recipe has none and is still valid, while
    a v1 recipe without one is not."""
    ws = tiny_workspace({"recipes/ft/sft.yaml": LLMFT_RECIPE,
                         "recipes/tiny/nomodel.yaml": MINI_RECIPE[:MINI_RECIPE.index("model:\n")]})
    validate(compose(["ft/sft"], None, Workspace(ws), env={}))
    with pytest.raises(HpctlError) as exc:
        validate(compose(["tiny/nomodel"], None, Workspace(ws), env={}))
    assert ("recipes.model", "missing required key 'model'") in [(p.key, p.message) for p in exc.value.problems]
