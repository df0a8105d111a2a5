"""The built-in catalog: recipes/, clusters/ and config.yaml, checked structurally.

These tests read the YAML as written (no hpctl pipeline): values that still hold an interpolation
(`${...}`) are exempt from the schema, arithmetic uses the literal numbers. The end-to-end check
(resolve, validate, pre-flight) runs through `hpctl validate` in the pipeline's own tests.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
ALL_NAMES = [p.relative_to(ROOT / "recipes").with_suffix("").as_posix() for p in RECIPES]
NAMES = [n for n in ALL_NAMES if not n.startswith("evaluation/")]  # training recipes
EVALUATION = [n for n in ALL_NAMES if n.startswith("evaluation/")]
TINY = [n for n in NAMES if n.startswith("tiny/")]
FULL = [n for n in NAMES if not n.startswith("tiny/")]
CLUSTERS = ("local", "slurm", "k8s")

# Published parameter counts (billions) of the architectures the full-size recipes describe.
PUBLISHED_PARAMS_B = {
    "llama/llama3_1_8b": 8.03, "llama/llama3_2_1b": 1.24, "llama/llama3_3_70b": 70.55,
    "mistral/mistral_7b": 7.25, "mixtral/mixtral_8x7b": 46.70, "qwen/qwen2_5_7b": 7.62,
}


def read(path: Path):
    return YAML(typ="safe").load(path.read_text())


def recipe(name: str) -> dict:
    return read(ROOT / "recipes" / f"{name}.yaml")


def schema(name: str) -> dict:
    return json.loads((ROOT / "schemas" / name).read_text())


def raw_errors(schema_name: str, instance) -> list[str]:
    """Schema violations of unresolved YAML, leaving out values that are still interpolations."""
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in Draft202012Validator(schema(schema_name)).iter_errors(instance)
                  if not (isinstance(e.instance, str) and "${" in e.instance))


def kind(name: str) -> str:
    if "lora" in name:
        return "lora"
    return "fine-tune" if "fine_tuning" in name else "pretrain"


def parameters(model: dict) -> int:
    """Decoder-only transformer parameter count (no biases) from the recipe's architecture fields."""
    h, layers, heads, kv = model["hidden_size"], model["num_hidden_layers"], model["num_attention_heads"], model["num_key_value_heads"]
    head_dim = h // heads
    experts = model.get("num_local_experts") or 1
    attention = h * head_dim * (heads + 2 * kv) + heads * head_dim * h
    mlp = 3 * h * model["intermediate_size"] * experts + (h * experts if experts > 1 else 0)
    embeddings = model["vocab_size"] * h * (1 if model.get("tie_word_embeddings") else 2)
    return layers * (attention + mlp + 2 * h) + embeddings + h


def test_the_catalog_holds_the_promised_recipes():
    assert set(NAMES) == {
        "tiny/tiny_llama", "tiny/tiny_mistral", "tiny/tiny_mixtral", "tiny/tiny_llama_lora",
        "llama/llama3_1_8b_pretrain", "llama/llama3_1_8b_fine_tuning", "llama/llama3_1_8b_lora",
        "llama/llama3_2_1b_pretrain", "llama/llama3_3_70b_fine_tuning", "llama/llama3_3_70b_lora",
        "mistral/mistral_7b_pretrain", "mixtral/mixtral_8x7b_pretrain",
        "qwen/qwen2_5_7b_pretrain", "qwen/qwen2_5_7b_lora",
    }


@pytest.mark.parametrize("name", EVALUATION)
def test_evaluation_recipe_passes_the_evaluation_schema(name):
    assert raw_errors("evaluation.schema.json", recipe(name)) == []
    assert recipe(name)["run"]["name"] == Path(name).name.replace("_", "-")


@pytest.mark.parametrize("name", NAMES)
def test_recipe_passes_the_recipe_schema(name):
    assert raw_errors("recipe.schema.json", recipe(name)) == []


@pytest.mark.parametrize("name", NAMES)
def test_recipe_keeps_hyperpods_layout(name):
    r = recipe(name)
    assert list(r) == ["run", "trainer", "exp_manager", "use_smp_model", "distributed_backend", "model"]
    assert r["run"]["results_dir"] == "${base_results_dir}/${.name}"
    assert r["run"]["model_type"] == "hf"
    assert r["exp_manager"]["exp_dir"] is None
    assert r["exp_manager"]["checkpoint_dir"] == "${recipes.exp_manager.exp_dir}/checkpoints/"
    assert r["model"]["precision"] == "${recipes.trainer.precision}"
    assert r["model"]["lr_decay_iters"] == "${recipes.trainer.max_steps}"


@pytest.mark.parametrize("name", NAMES)
def test_run_name_follows_the_file_name(name):
    """Distinct names keep every recipe's results directory apart."""
    assert recipe(name)["run"]["name"] == Path(name).name.replace("_", "-")


@pytest.mark.parametrize("name", NAMES)
def test_recipe_type_matches_its_name(name):
    model = recipe(name)["model"]
    assert (model["peft"]["peft_type"] == "lora") == (kind(name) == "lora")
    if kind(name) == "pretrain":
        assert model["do_finetune"] is False and model["hf_model_name_or_path"] is None


@pytest.mark.parametrize("name", NAMES)
def test_parallel_layout_fits_the_world_size(name):
    r = recipe(name)
    model, trainer = r["model"], r["trainer"]
    world = trainer["devices"] * trainer["num_nodes"]
    tp, ep, cp = (model[k] for k in ("tensor_model_parallel_degree", "expert_model_parallel_degree", "context_parallel_degree"))
    assert world % (tp * ep * cp) == 0
    assert world % model["shard_degree"] == 0
    if model["sharding_strategy"] == "full_shard":
        assert model["shard_degree"] == world // (tp * cp)
    if model["global_batch_size"] is not None:
        assert model["global_batch_size"] % (model["train_batch_size"] * world // (tp * cp)) == 0


@pytest.mark.parametrize("name", NAMES)
def test_architecture_is_consistent(name):
    model = recipe(name)["model"]
    assert model["hidden_size"] % model["num_attention_heads"] == 0
    assert model["num_attention_heads"] % model["num_key_value_heads"] == 0
    if isinstance(model["max_position_embeddings"], int):
        assert model["max_context_width"] <= model["max_position_embeddings"]
    if model["model_type"] == "mixtral":
        assert model["moe"] is True and model["num_experts_per_tok"] <= model["num_local_experts"]


@pytest.mark.parametrize("name", TINY)
def test_tiny_recipes_run_on_two_cpu_ranks_with_synthetic_data(name):
    r = recipe(name)
    trainer, model = r["trainer"], r["model"]
    assert (trainer["accelerator"], trainer["devices"], trainer["num_nodes"]) == ("cpu", 2, 1)
    assert trainer["precision"] == "fp32" and r["distributed_backend"] == "gloo"
    assert model["data"]["use_synthetic_data"] is True
    assert trainer["max_steps"] <= 50 and parameters(model) < 500_000
    callback = r["exp_manager"]["checkpoint_callback_params"]
    assert callback["save_top_k"] >= 1 and 0 < callback["every_n_train_steps"] < trainer["max_steps"]


def test_tiny_mixtral_routes_top_2_of_4_experts():
    model = recipe("tiny/tiny_mixtral")["model"]
    assert (model["num_local_experts"], model["num_experts_per_tok"]) == (4, 2)


@pytest.mark.parametrize("name", FULL)
def test_full_size_recipes_target_p5_nodes(name):
    trainer = recipe(name)["trainer"]
    assert (trainer["accelerator"], trainer["devices"], trainer["precision"]) == ("gpu", 8, "bf16")


@pytest.mark.parametrize("name", FULL)
def test_full_size_architecture_matches_the_published_model(name):
    model_id = name.rsplit("_", 1)[0].removesuffix("_fine")
    expected = PUBLISHED_PARAMS_B[model_id] * 1e9
    assert abs(parameters(recipe(name)["model"]) - expected) / expected < 0.01


@pytest.mark.parametrize("name", [n for n in FULL if kind(n) != "pretrain"])
def test_fine_tuning_recipes_start_from_a_local_checkpoint(name):
    model = recipe(name)["model"]
    assert model["do_finetune"] is True
    assert model["hf_model_name_or_path"].startswith("/")


# ---------------------------------------------------------------- clusters and the general config
def commented_keys(path: Path) -> list[str]:
    """Keys (at any depth) whose line carries no comment."""
    return [line.strip() for line in path.read_text().splitlines()
            if re.match(r"^\s*[A-Za-z_]+:", line) and "#" not in line]


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_builtin_cluster_validates_and_names_its_type(cluster):
    data = read(ROOT / "clusters" / f"{cluster}.yaml")
    assert raw_errors(f"cluster/{cluster}.schema.json", data) == []
    assert data["type"] == cluster


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_builtin_cluster_documents_every_field(cluster):
    data = read(ROOT / "clusters" / f"{cluster}.yaml")
    assert list(data) == list(schema(f"cluster/{cluster}.schema.json")["properties"])
    assert commented_keys(ROOT / "clusters" / f"{cluster}.yaml") == []


def test_builtin_clusters_describe_h100_nodes():
    for cluster in ("slurm", "k8s"):
        data = read(ROOT / "clusters" / f"{cluster}.yaml")
        assert (data["devices_per_node"], data["device_memory_gb"]) == (8, 80)
    local = read(ROOT / "clusters" / "local.yaml")
    assert (local["devices_per_node"], local["device_memory_gb"]) == (None, None)


def test_general_config_passes_the_spec_schema():
    config = read(ROOT / "config.yaml")
    spec = schema("spec.schema.json")
    spec["required"] = [k for k in spec["required"] if k not in ("cluster", "recipes")]
    spec["properties"]["recipes"] = {}  # the recipe schema is checked above; no cross-file $ref here
    assert [str(e.message) for e in Draft202012Validator(spec).iter_errors(config)
            if not (isinstance(e.instance, str) and "${" in e.instance)] == []
    assert (config["cluster_type"], config["base_results_dir"]) == ("local", "results")
    assert config["training_config"] == "${hydra:runtime.choices.recipes}"
    assert commented_keys(ROOT / "config.yaml") == []
