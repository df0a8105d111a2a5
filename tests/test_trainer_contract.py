"""The plan is the truth: what `hpctl validate` / `plan` pass, the trainer accepts, and every
recipe the trainer refuses is refused by the plan first, at the same key.

adapter.config owns the trainer's rules; hpctl asks it at plan time (checks.check_trainer). These
tests hold the two ends together:
- each refusal case of the trainer's own tests (tests/adapter/test_config.py REFUSALS and
  CONTEXT_PARALLEL_REFUSALS, tests/adapter/test_tracking.py TRACKING_REFUSALS, and
  tests/adapter/hyperpod.py LLMFT_REFUSALS for v2 recipes) fails `hpctl validate` at the same
  recipe key;
- every recipe that validates (the built-in catalog, HyperPod's v1 and v2 collections, generated
  variants) is accepted by the trainer's config when read from the spec file the job receives;
- the schemas' enums and bounds for trainer-owned settings equal the trainer's constants.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapter import config as trainer_config
from adapter import devices, trainconfig, v1
from adapter.architectures import ARCHITECTURES
from adapter.evalspec import is_evaluation
from hpctl import catalog
from hpctl.checks import world_size
from hpctl.compat import SUPPORTED_MODEL_TYPES
from hpctl.entry import runs_adapter
from hpctl.compose import compose
from hpctl.errors import HpctlError
from hpctl.loader import load_file
from hpctl.plan import verify
from hpctl.resources import builtin
from hpctl.workspace import Workspace
from tests.helpers.trainer import deep_merge, tiny_recipe
from tests.adapter.hyperpod import LLMFT_REFUSALS, SFT, TA
from tests.adapter.test_config import CONTEXT_PARALLEL_REFUSALS, REFUSALS
from tests.adapter.test_tracking import TRACKING_REFUSALS

LOCAL = "type: local\npython: null\nenv: {}\ndevices_per_node: null\ndevice_memory_gb: 16\nnproc_per_node: null\n"


def workspace(tmp_path: Path, recipe: dict[str, Any]) -> Workspace:
    """A workspace holding the recipe as recipes/tiny.yaml (a HyperPod v1 hf recipe) and a local cluster."""
    recipe["run"].setdefault("model_type", "hf")
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "clusters").mkdir(exist_ok=True)
    (tmp_path / "clusters" / "local.yaml").write_text(LOCAL)
    (tmp_path / "recipes" / "tiny.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return Workspace(tmp_path)


def trainer_accepts_the_job_spec(spec) -> None:
    """Read the spec as the job receives it (its public JSON) and build the trainer's config with
    the world size the launcher starts; the job's files are not read (they live on the cluster)."""
    if not runs_adapter(spec.data):
        return
    doc = json.loads(json.dumps(spec.public_data(), default=str))
    trainer_config.from_recipe(doc["recipes"], world_size(spec), files=False)


@pytest.mark.parametrize("sections, key", REFUSALS + [case[:2] for case in CONTEXT_PARALLEL_REFUSALS + TRACKING_REFUSALS])
def test_every_trainer_refusal_is_a_plan_error_at_the_same_key(tmp_path: Path, sections: dict, key: str) -> None:
    recipe = tiny_recipe(tmp_path / "results", **sections)
    with pytest.raises(HpctlError) as exc:
        ws = workspace(tmp_path, recipe)
        verify(compose(["tiny"], "local", ws, env={}))
    keys = [p.key for p in exc.value.problems]
    assert f"recipes.{key}" in keys, (key, [p.render() for p in exc.value.problems])
    located = next(p for p in exc.value.problems if p.key == f"recipes.{key}")
    assert located.origin is not None and located.origin.file == "recipes/tiny.yaml", located.render()


def _llmft_problems(shared_dir: Path, cluster: str, *overrides: str) -> list:
    """The located problems `hpctl validate` reports for HyperPod's v2 SFT-LoRA recipe with
    `overrides` (HyperPod's form), its user inputs filled by recipes check's stand-ins."""
    root = shared_dir / "peer-recipes" / "hyperpod"
    if not (root / "recipes" / f"{SFT}.yaml").is_file():
        pytest.skip(f"{root} is absent")
    stand_ins = catalog.stand_ins(load_file(root / "recipes" / f"{SFT}.yaml").data)
    try:
        verify(compose([f"recipes={SFT}", f"cluster={cluster}", "container=example.com/img:1", *stand_ins,
                        *(f"++{o}" for o in overrides)], None, Workspace(root), env={}))
    except HpctlError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize("override, key", LLMFT_REFUSALS)
def test_every_llmft_refusal_is_a_plan_error_at_the_same_key(shared_dir: Path, tmp_path: Path, override: str,
                                                             key: str) -> None:
    """The v2 (llm_finetuning_aws) refusals of the trainer's tests, through `hpctl validate`: at the
    LLMFT key, located in the recipe or the override, and caused by the override alone. Files are
    read for local jobs only, so the missing base model is a local case, against real files."""
    cluster, base = "slurm", []
    if key.endswith("model_name_or_path"):
        (tmp_path / "model").mkdir()
        (tmp_path / "train.jsonl").write_text('{"prompt": "a", "completion": "b"}\n' * 4)
        cluster = "local"
        base = ["recipes.trainer.accelerator=cpu", "recipes.trainer.devices=1",
                f"recipes.training_config.model_config.model_name_or_path={tmp_path / 'model'}",
                f"recipes.training_config.datasets.train_data.file_path={tmp_path / 'train.jsonl'}"]
    assert f"recipes.{key}" not in [p.key for p in _llmft_problems(shared_dir, cluster, *base)]
    problems = _llmft_problems(shared_dir, cluster, *base, override)
    located = next((p for p in problems if p.key == f"recipes.{key}"), None)
    assert located is not None, (key, [p.render() for p in problems])
    origin = located.origin
    assert origin is not None and (origin.override is not None or (origin.file or "").startswith("recipes/")), \
        located.render()
    assert all(p.key.startswith(("recipes.training_config.", "recipes.run.", "recipes.trainer.", "cluster"))
               for p in problems), [p.render() for p in problems]


@pytest.mark.parametrize("global_batch, words", [
    (7, "7 is not a multiple of training_config.training_args.micro_train_batch_size (2)"),
    (8, "8 is not a multiple of training_config.training_args.micro_train_batch_size x data-parallel size (2 x 8 = 16)"),
])
def test_llmft_batch_refusals_name_the_llmft_keys(shared_dir: Path, global_batch: int, words: str) -> None:
    """The trainer's batch rules are v1 rules run on the translated recipe: for an LLMFT recipe
    their message names LLMFT's micro batch key, not the v1 model.train_batch_size it lacks (and
    not LLMFT's train_batch_size, which is its global batch)."""
    problems = _llmft_problems(shared_dir, "slurm", TA + "micro_train_batch_size=2", f"{TA}train_batch_size={global_batch}")
    located = next((p for p in problems if p.key == TA + "train_batch_size"), None)
    assert located is not None and words in located.message, [p.render() for p in problems]
    assert "model." not in located.message


def test_every_refusal_is_reported_at_once(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path / "results", trainer={"val_check_interval": 0, "precision": "16"},
                         model={"num_key_value_heads": 3, "optim": {"sched": {"name": "CosineAnnealing", "min_lr": 1.0}}})
    with pytest.raises(HpctlError) as exc:
        verify(compose(["tiny"], "local", workspace(tmp_path, recipe), env={}))
    keys = {p.key for p in exc.value.problems}
    assert {"recipes.trainer.val_check_interval", "recipes.trainer.precision", "recipes.model.num_key_value_heads",
            "recipes.model.optim.sched.min_lr"} <= keys


def test_the_trainer_accepts_every_built_in_recipe_that_validates() -> None:
    """Every catalog recipe plans for Slurm (local and k8s need a machine or an image) and its job
    spec is accepted by the trainer."""
    ws = Workspace(builtin("recipes").parent)
    planned_on_slurm = set()
    for name in sorted(ws.recipes()):
        for cluster in ("local", "slurm", "k8s"):
            try:
                spec = compose([name], cluster, ws, env={})
                verify(spec)
            except HpctlError:
                continue
            trainer_accepts_the_job_spec(spec)
            if cluster == "slurm":
                planned_on_slurm.add(name)
    assert planned_on_slurm == set(ws.recipes())


# (supported, planned) of each HyperPod collection: v1 has 85 hf recipes, all planned; v2 has 86
# llm_finetuning_aws recipes and one hf (custom_model/falcon), all planned but gpt_oss 20B SFT-LoRA
# (LoRA on fused expert parameters, peft_config.target_parameters, is refused at plan time), and its
# 151 verl recipes, all planned (they run verl, so the trainer is not asked: tests/test_verl*.py).
HYPERPOD_PLANNED = {"hyperpod-v1": (85, 85), "hyperpod": (87 + 151, 86 + 151)}


@pytest.mark.parametrize("collection", sorted(HYPERPOD_PLANNED))
def test_the_trainer_accepts_every_hyperpod_recipe_that_plans(collection: str, shared_dir: Path) -> None:
    """Over the whole collection, and with the count it plans pinned: a regression that plans fewer
    recipes (or refuses every one) fails here, not only a trainer refusal of a planned one."""
    root = shared_dir / "peer-recipes" / collection
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    ws = Workspace(root)
    supported = planned = 0
    for path in sorted((root / "recipes").rglob("*.yaml")):
        name = path.relative_to(root / "recipes").with_suffix("").as_posix()
        run = load_file(path).data.get("run")
        supported += isinstance(run, dict) and run.get("model_type") in SUPPORTED_MODEL_TYPES
        if is_evaluation(load_file(path).data):  # lm-eval runs it, not the trainer (tests/evaluation)
            continue
        try:
            stand_ins = catalog.stand_ins(load_file(path).data)
            spec = compose([f"recipes={name}", "cluster=slurm", "container=example.com/img:1", *stand_ins], None, ws,
                           env={})
            verify(spec)
        except HpctlError:
            continue
        trainer_accepts_the_job_spec(spec)
        planned += 1
    assert (supported, planned) == HYPERPOD_PLANNED[collection]


# Generated variants: the tiny recipe with random values for settings the trainer reads, drawn
# from sets mixing accepted and refused values. Whatever validate passes, the trainer accepts.
MENU: dict[str, list[Any]] = {
    "trainer.devices": [1, 2, 3, 4],
    "trainer.precision": ["bf16", "32", "16", "fp32", "bf16-mixed"],
    "trainer.val_check_interval": [0, 1, 2.0, 0.5, 7],
    "trainer.limit_val_batches": [0, 1.0, 0.5, 3],
    "model.train_batch_size": [1, 2, 3],
    "model.global_batch_size": [None, 2, 4, 6, 12],
    "model.tensor_model_parallel_degree": [1, 2, 3, 4],
    "model.sharding_strategy": ["full_shard", "hybrid_shard", "no_shard", "zero3"],
    "model.shard_degree": [None, 1, 2, 3],
    "model.num_key_value_heads": [1, 2, 3, 4],
    "model.hidden_size": [32, 64, 66],
    "model.optim.lr": [0.001, 0.0, -1.0, float("inf")],
    "model.optim.sched.name": ["constant", "CosineAnnealing", "LinearAnnealingWithWarmUp", "cosine"],
    "model.optim.sched.warmup_steps": [0, 2, 100],
    "model.optim.sched.min_lr": [0.0, 0.5, 1e-5],
    "model.max_context_width": [1, 32, 64],
    "model.peft": [None, {"peft_type": "lora"}],
    "model.dpo": [None, {"enabled": True, "label_smoothing": 0.5}, {"enabled": True, "beta": 0.1}],
}


def _set(recipe: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = recipe
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def test_generated_variants_that_validate_are_accepted_by_the_trainer(tmp_path: Path) -> None:
    rng = random.Random(20261201)
    outcomes = {"valid": 0, "refused": 0}
    for i in range(60):
        recipe = tiny_recipe(tmp_path / "results")
        for path in rng.sample(sorted(MENU), 4):
            _set(recipe, path, rng.choice(MENU[path]))
        recipe = deep_merge(recipe, {})
        directory = tmp_path / f"v{i}"
        directory.mkdir()
        try:
            spec = compose(["tiny"], "local", workspace(directory, recipe), env={})
            verify(spec)
        except HpctlError:
            outcomes["refused"] += 1
            continue
        outcomes["valid"] += 1
        trainer_accepts_the_job_spec(spec)
    assert outcomes["valid"] >= 5 and outcomes["refused"] >= 5, outcomes


def _schema() -> dict[str, Any]:
    return json.loads((builtin("schemas") / "recipe.schema.json").read_text())


def test_schema_enums_for_trainer_settings_equal_the_trainers_constants() -> None:
    s = _schema()
    model = s["properties"]["model"]["properties"]
    assert set(model["sharding_strategy"]["enum"]) == set(trainconfig.SHARDING_STRATEGIES)
    assert set(model["optim"]["properties"]["name"]["enum"]) == set(trainconfig.OPTIMIZERS)
    assert set(model["optim"]["properties"]["sched"]["properties"]["name"]["enum"]) == set(trainconfig.SCHEDULES)
    assert set(model["model_type"]["enum"]) == set(ARCHITECTURES)
    assert set(model["fp8_amax_compute_algo"]["enum"]) == set(v1.FP8_ALGOS)
    assert set(s["properties"]["trainer"]["properties"]["accelerator"]["enum"]) == set(devices.ACCELERATORS)
    assert {str(v) for v in s["$defs"]["precision"]["enum"]} == set(trainconfig.PRECISIONS)


@pytest.mark.parametrize("key, bound, accepted, refused", [
    ("exp_manager.checkpoint_callback_params.save_top_k", ("minimum", -1), -1, -2),
    ("model.dpo.label_smoothing", ("exclusiveMaximum", 0.5), 0.49, 0.5),
    ("model.peft.dropout", ("exclusiveMaximum", 1), 0.5, 1.0),
    ("model.optim.lr", ("exclusiveMinimum", 0), 1e-6, 0.0),
])
def test_schema_bounds_equal_the_trainers(tmp_path: Path, key: str, bound: tuple[str, Any], accepted: Any,
                                          refused: Any) -> None:
    """The schema's bound is written as the trainer enforces it: the value just inside passes both,
    the value at or past it is refused by both."""
    node = _schema()
    for part in key.split("."):
        node = node["properties"][part]
    assert node[bound[0]] == bound[1]
    extra = {"model": {"do_finetune": True, "hf_model_name_or_path": "/base"}} if "peft" in key else {}
    dpo = {"model": {"dpo": {"enabled": True}}} if "dpo" in key else {}
    for value, ok in ((accepted, True), (refused, False)):
        recipe = deep_merge(tiny_recipe(tmp_path), deep_merge(extra, dpo))
        if "peft" in key:
            recipe["model"]["peft"] = {"peft_type": "lora"}
        _set(recipe, key, value)
        assert (trainer_config.problems(recipe, 1) == []) is ok, (key, value)
