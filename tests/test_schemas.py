"""The JSON Schemas in schemas/, checked with jsonschema directly (no hpctl pipeline involved).

The schemas apply to the *resolved* spec. Where a test feeds raw YAML (HyperPod's recipes), values
that still hold an interpolation (`${...}`) are exempt, because the resolver replaces them first.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
SHARED = ROOT / ".." / "shared"
V1 = SHARED / "peer-recipes" / "hyperpod-v1"
SCHEMA_FILES = sorted(p.relative_to(SCHEMAS).as_posix() for p in SCHEMAS.rglob("*.schema.json"))


def load(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def validator(name: str) -> Draft202012Validator:
    """A validator that resolves cross-file $refs (spec -> recipe) through the schemas' $ids."""
    registry = Registry().with_resources(
        (load(n)["$id"], Resource.from_contents(load(n))) for n in SCHEMA_FILES)
    return Draft202012Validator(load(name), registry=registry)


def errors(name: str, instance) -> list[tuple[str, str, str]]:
    """(dotted path, failing keyword, message) for every violation."""
    return sorted((".".join(map(str, e.absolute_path)), e.validator, e.message)
                  for e in validator(name).iter_errors(instance))


def raw_errors(name: str, instance) -> list[tuple[str, str, str]]:
    """Violations of unresolved YAML, leaving out values that are still `${...}` interpolations."""
    return sorted((".".join(map(str, e.absolute_path)), e.validator, e.message)
                  for e in validator(name).iter_errors(instance)
                  if not (isinstance(e.instance, str) and "${" in e.instance))


def read_yaml(path: Path):
    return YAML(typ="safe").load(path.read_text())


def need_v1() -> None:
    if not (V1 / "recipes").is_dir():
        pytest.skip(f"HyperPod v1 recipes not found at {V1} (../shared beside the repository)")


def v1_hf_recipes() -> list[Path]:
    need_v1()
    found = []
    for path in sorted((V1 / "recipes").rglob("*.yaml")):
        data = read_yaml(path)
        if isinstance(data, dict) and (data.get("run") or {}).get("model_type") == "hf":
            found.append(path)
    return found


# A resolved spec as plan produces it: general config, cluster, recipe (interpolations replaced).
RECIPE = {
    "run": {"name": "tiny-llama", "results_dir": "/work/results/tiny-llama", "time_limit": "0-00:10:00",
            "model_type": "hf"},
    "trainer": {"devices": 2, "num_nodes": 1, "accelerator": "cpu", "precision": "fp32", "max_steps": 20,
                "log_every_n_steps": 1, "val_check_interval": 1, "limit_val_batches": 0, "peak_tflops": None},
    "exp_manager": {
        "exp_dir": "/work/results/tiny-llama", "name": "experiment",
        "create_tensorboard_logger": False,
        "summary_writer_kwargs": {"save_dir": "/work/results/tiny-llama/tensorboard", "flush_secs": 5},
        "create_checkpoint_callback": True,
        "checkpoint_callback_params": {"save_top_k": 2, "every_n_train_steps": 10, "monitor": "step",
                                       "mode": "max", "save_last": True, "async_save": False},
        "checkpoint_dir": "/work/results/tiny-llama/checkpoints/", "resume_from_checkpoint": None,
        "auto_checkpoint": {"enabled": False},
        "export_full_model": {"every_n_train_steps": 0, "save_last": True},
    },
    "use_smp_model": False,
    "distributed_backend": "gloo",
    "model": {
        "model_type": "llama_v3", "train_batch_size": 4, "val_batch_size": 1, "global_batch_size": 16,
        "seed": 12345, "grad_clip": 1.0, "tensor_model_parallel_degree": 1, "expert_model_parallel_degree": 1,
        "context_parallel_degree": 1, "moe": False, "activation_checkpointing": False,
        "sharding_strategy": "full_shard", "shard_degree": 2, "compile": False, "cpu_offload": False,
        "fp8": False, "max_context_width": 64, "max_position_embeddings": 64, "num_hidden_layers": 2,
        "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 172, "initializer_range": 0.02,
        "layernorm_epsilon": 1e-5, "vocab_size": 256, "num_key_value_heads": 2, "use_flash_attention": False,
        "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192},
        "do_finetune": False, "hf_model_name_or_path": None, "hf_access_token": None,
        "peft": {"peft_type": "lora", "rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "precision": "fp32", "lr_decay_iters": 20,
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.95],
                  "sched": {"name": "CosineAnnealing", "warmup_steps": 2, "constant_steps": 0, "min_lr": 1e-4}},
        "data": {"train_dir": None, "val_dir": None, "dataset_type": "hf", "use_synthetic_data": True,
                 "tokenizer_name_or_path": None, "num_workers": 0},
        "viztracer": {"enabled": False},
    },
}
SPEC = {
    "cluster_type": "local", "debug": False, "instance_type": None, "base_results_dir": "/work/results",
    "container": None,
    "git": {"repo_url_or_path": None, "branch": None, "commit": None, "entry_script": None, "token": None,
            "update_adapter": False},
    "env_vars": {"NCCL_DEBUG": "WARN"},
    "training_config": "tiny/tiny_llama",
    "cluster": {"type": "local", "python": None, "env": {}, "devices_per_node": None, "device_memory_gb": None,
                "nproc_per_node": None},
    "recipes": RECIPE,
}


def with_value(path: str, value):
    """SPEC with one dotted path set (a missing leaf is added)."""
    spec = copy.deepcopy(SPEC)
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        node = node[part]
    node[leaf] = value
    return spec


def without(path: str):
    spec = copy.deepcopy(SPEC)
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        node = node[part]
    del node[leaf]
    return spec


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_each_schema_is_a_valid_draft_2020_12_schema(name):
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/schemas/" + name)


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_files_are_pretty_printed_json(name):
    text = (SCHEMAS / name).read_text()
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def property_schemas(node, path=""):
    """(path, schema) of every named property anywhere in a schema."""
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            yield f"{path}.{key}".lstrip("."), sub
        for key, sub in node.items():
            if key == "properties":
                for pkey, psub in sub.items():
                    yield from property_schemas(psub, f"{path}.{pkey}".lstrip("."))
            elif isinstance(sub, (dict, list)):
                yield from property_schemas(sub, path)
    elif isinstance(node, list):
        for sub in node:
            yield from property_schemas(sub, path)


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_property_has_a_one_line_description(name):
    """The CLI shows the description as "expected", so none may be missing or span lines."""
    missing = [p for p, s in property_schemas(load(name)) if "\n" in s.get("description", "\n")]
    assert missing == []


def test_the_representative_spec_is_valid():
    assert errors("spec.schema.json", SPEC) == []


def test_the_recipe_schema_alone_accepts_the_recipe():
    assert errors("recipe.schema.json", RECIPE) == []


@pytest.mark.parametrize("path, bad_key", [
    ("recipes.trainer", "max_step"),
    ("recipes.model.optim", "lrr"),
    ("recipes.model.optim.sched", "warmup_step"),
    ("recipes.exp_manager.checkpoint_callback_params", "save_top"),
    ("recipes.model.peft", "ranks"),
    ("recipes.model.data", "train_dirs"),
    ("recipes", "trainers"),
    ("git", "tokn"),
])
def test_an_unknown_key_in_a_known_section_is_an_error(path, bad_key):
    found = errors("spec.schema.json", with_value(f"{path}.{bad_key}", 1))
    assert [(p, kw) for p, kw, _ in found] == [(path, "additionalProperties")]
    assert repr(bad_key) in found[0][2]


def test_an_unknown_top_level_key_is_an_error():
    found = errors("spec.schema.json", with_value("base_result_dir", "/x"))
    assert [(p, kw) for p, kw, _ in found] == [("", "additionalProperties")]


def test_free_form_maps_stay_open():
    spec = with_value("recipes.exp_manager.wandb_logger_kwargs", {"project": "p", "tags": ["a"], "anything": 1})
    spec["recipes"]["exp_manager"]["mlflow_logger_kwargs"] = {"tracking_uri": "/m", "run_name": "x"}
    spec["env_vars"]["CUSTOM_FLAG"] = 1
    assert errors("spec.schema.json", spec) == []


@pytest.mark.parametrize("path, value", [
    ("recipes.trainer.devices", "eight"),
    ("recipes.trainer.max_steps", 2.5),
    ("recipes.trainer.num_nodes", True),
    ("recipes.model.activation_checkpointing", "yes"),
    ("recipes.model.optim.lr", "fast"),
    ("recipes.model.optim.betas", 0.9),
    ("recipes.model.peft.target_modules", "q_proj"),
    ("recipes.run.name", 7),
    ("recipes.exp_manager.summary_writer_kwargs", "tb"),
    ("base_results_dir", None),
    ("env_vars", ["NCCL_DEBUG=WARN"]),
])
def test_a_wrong_type_is_an_error_at_its_path(path, value):
    found = errors("spec.schema.json", with_value(path, value))
    assert [(p, kw) for p, kw, _ in found] == [(path, "type")]


@pytest.mark.parametrize("path, value, keyword", [
    ("recipes.trainer.devices", 0, "minimum"),
    ("recipes.trainer.num_nodes", -1, "minimum"),
    ("recipes.trainer.max_steps", 0, "minimum"),
    ("recipes.model.tensor_model_parallel_degree", 0, "minimum"),
    ("recipes.model.expert_model_parallel_degree", 0, "minimum"),
    ("recipes.model.context_parallel_degree", 0, "minimum"),
    ("recipes.model.shard_degree", 0, "minimum"),
    ("recipes.model.train_batch_size", 0, "minimum"),
    ("recipes.model.optim.lr", 0, "exclusiveMinimum"),
    ("recipes.model.optim.weight_decay", -0.1, "minimum"),
    ("recipes.model.peft.dropout", 1.5, "exclusiveMaximum"),
    ("recipes.model.peft.rank", 0, "minimum"),
    ("recipes.model.optim.sched.warmup_steps", -1, "minimum"),
    ("recipes.model.optim.betas", [0.9], "minItems"),
    ("recipes.model.data.num_workers", -1, "minimum"),
    ("recipes.trainer.peak_tflops", 0, "exclusiveMinimum"),
    ("recipes.run.name", "my job/1", "pattern"),
    ("recipes.run.time_limit", "6 days", "pattern"),
])
def test_an_out_of_range_value_is_an_error_at_its_path(path, value, keyword):
    found = errors("spec.schema.json", with_value(path, value))
    assert [(p, kw) for p, kw, _ in found] == [(path, keyword)]


@pytest.mark.parametrize("path, value", [
    ("recipes.trainer.precision", "bf17"),
    ("recipes.model.precision", "fp8"),
    ("recipes.trainer.accelerator", "tpu"),
    ("recipes.model.model_type", "gpt5"),
    ("recipes.run.model_type", "neuron-hf"),
    ("recipes.model.sharding_strategy", "zero3"),
    ("recipes.model.peft.peft_type", "qlora"),
    ("recipes.model.optim.name", "sgd"),
    ("recipes.model.optim.sched.name", "cosine"),
    ("recipes.model.data.dataset_type", "parquet"),
    ("recipes.distributed_backend", "mpi"),
    ("recipes.exp_manager.checkpoint_callback_params.mode", "maximum"),
    ("cluster_type", "bcm"),
])
def test_a_bad_enum_value_is_an_error_at_its_path(path, value):
    found = errors("spec.schema.json", with_value(path, value))
    assert [(p, kw) for p, kw, _ in found] == [(path, "enum")]


@pytest.mark.parametrize("path", [
    "recipes.run.name", "recipes.run.results_dir", "recipes.run.model_type", "recipes.trainer.devices", "recipes.trainer.num_nodes",
    "recipes.trainer.max_steps", "recipes.model.model_type", "recipes.model", "recipes", "cluster",
])
def test_a_missing_required_key_is_an_error_at_its_parent(path):
    parent, _, leaf = path.rpartition(".")
    found = errors("spec.schema.json", without(path))
    assert [(p, kw) for p, kw, _ in found] == [(parent, "required")]
    assert repr(leaf) in found[0][2]


def test_one_run_reports_every_violation():
    spec = with_value("recipes.trainer.max_step", 5)
    spec["recipes"]["model"]["optim"]["lr"] = -1
    spec["recipes"]["model"]["sharding_strategy"] = "zero3"
    found = errors("spec.schema.json", spec)
    assert [p for p, _, _ in found] == ["recipes.model.optim.lr", "recipes.model.sharding_strategy", "recipes.trainer"]


def test_precision_accepts_hyperpod_and_lightning_spellings():
    for value in ("bf16", "bf16-mixed", "fp32", "32-true", 32):
        assert errors("spec.schema.json", with_value("recipes.trainer.precision", value)) == [], value
    # fp16 needs loss scaling, which the trainer does not do: the schema offers what the trainer takes
    assert errors("spec.schema.json", with_value("recipes.trainer.precision", 16))


def test_nullable_fields_accept_null():
    for path in ("recipes.model.rope_scaling", "recipes.model.peft.peft_type", "recipes.model.peft.target_modules",
                 "recipes.model.shard_degree", "recipes.model.global_batch_size", "recipes.run.time_limit",
                 "recipes.exp_manager.exp_dir", "container", "instance_type", "training_config"):
        assert errors("spec.schema.json", with_value(path, None)) == [], path


def test_data_dirs_may_be_a_list_of_paths():
    assert errors("spec.schema.json", with_value("recipes.model.data.train_dir", ["/d/a", "/d/b"])) == []
    assert [p for p, _, _ in errors("spec.schema.json", with_value("recipes.model.data.train_dir", [1]))] == [
        "recipes.model.data.train_dir.0"]


# ---------------------------------------------------------------- clusters
@pytest.mark.parametrize("kind", ["slurm", "k8s", "sm_jobs"])
def test_hyperpod_cluster_files_validate(kind):
    """HyperPod's own cluster/slurm.yaml, cluster/k8s.yaml (with their `- null` list items) and cluster/sm_jobs.yaml."""
    need_v1()
    path = V1 / "cluster" / f"{kind}.yaml"
    assert errors(f"cluster/{kind}.schema.json", read_yaml(path)) == []


@pytest.mark.parametrize("kind, path, value, keyword", [
    ("slurm", "partion", "gpu", "additionalProperties"),
    ("slurm", "exclusive", "yes", "type"),
    ("slurm", "mem", "lots", "pattern"),
    ("slurm", "container_mounts", ["/a:/b:/c:/d"], "pattern"),
    ("slurm", "auto_resume", {"enabled": True, "max_restart": 3}, "additionalProperties"),
    ("slurm", "time", "two hours", "pattern"),
    ("slurm", "type", "k8s", "enum"),
    ("k8s", "shm_size", "64 gigs", "pattern"),
    ("k8s", "job_kind", "Job", "enum"),
    ("k8s", "namespace", "My_NS", "pattern"),
    ("k8s", "pullPolicy", "Sometimes", "enum"),
    ("k8s", "persistent_volume_claims", [{"claimName": "fsx", "mountpath": "/fsx"}], "additionalProperties"),
    ("local", "nproc_per_node", 0, "minimum"),
    ("local", "devices_per_node", "auto", "type"),
])
def test_cluster_mistakes_are_errors(kind, path, value, keyword):
    found = errors(f"cluster/{kind}.schema.json", {path: value})
    assert [kw for _, kw, _ in found] == [keyword]


def test_cluster_lists_may_hold_null_items_as_hyperpod_writes_them():
    assert errors("cluster/slurm.schema.json", {"container_mounts": [None, "/fsx:/fsx"], "srun_args": None,
                                                "slurm_docker_cfg": {"docker_args": None, "post_launch_commands": None}}) == []
    assert errors("cluster/k8s.schema.json", {"persistent_volume_claims": [None, {"claimName": "fsx", "mountPath": "/fsx"}],
                                              "label_selector": {"required": {"zone": ["a"]}, "weights": [100]}}) == []


# ---------------------------------------------------------------- HyperPod v1 recipes
def test_every_field_of_every_v1_hf_recipe_is_covered():
    """All 85 HyperPod v1 hf recipes pass the recipe schema (interpolated values aside)."""
    recipes = v1_hf_recipes()
    assert len(recipes) == 85
    failures = {p.relative_to(V1).as_posix(): raw_errors("recipe.schema.json", read_yaml(p)) for p in recipes}
    assert {k: v for k, v in failures.items() if v} == {}


@pytest.mark.parametrize("recipe, path", [
    ("training/llama/hf_llama3_8b_seq8k_trn1x4_pretrain.yaml", "run.model_type"),
    ("training/nova/nova_micro_p5x8_gpu_pretrain.yaml", "run.model_type"),
    ("training/llama/megatron_llama3_1_8b_nemo.yaml", "run"),
])
def test_a_non_hf_v1_recipe_fails_on_its_model_type(recipe, path):
    """Recipes hpctl cannot run are rejected with a located message, not a crash."""
    need_v1()
    found = raw_errors("recipe.schema.json", read_yaml(V1 / "recipes" / recipe))
    assert any(p == path and kw in ("enum", "required") and "model_type" in p + msg for p, kw, msg in found), found


def test_cluster_types_are_the_backends():
    """The schema's cluster_type enum is what hpctl.backends can run, and nothing else."""
    from hpctl.backends import MODULES
    from hpctl.resources import builtin
    schema = json.loads((builtin("schemas") / "spec.schema.json").read_text())
    assert set(schema["properties"]["cluster_type"]["enum"]) == set(MODULES)
