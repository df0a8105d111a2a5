"""Read the resolved job spec into one typed, validated TrainConfig: the trainer's entry to its rules.

The spec is what `hpctl plan` printed: JSON or YAML whose `recipes` key holds a HyperPod v1 recipe
(run, trainer, exp_manager, model) or a v2 LLM fine-tuning recipe (`run.model_type:
llm_finetuning_aws`, translated by llmft.py). A file without `recipes` is taken as the recipe itself.
Everything the trainer will do is decided before torch is imported, so a combination the trainer
cannot run is refused with every reason at once instead of failing mid-run.

hpctl runs `problems` / `from_recipe` at plan time with the world size its launcher will start, so
a recipe the trainer would refuse fails `hpctl plan` at the recipe's file and line, and asks the
queries below (precision_of, lora_of, planned_mesh, data_paths) rather than read the keys its own
way. The rules live in one module per concern, which this one asks:

- trainconfig.py: the TrainConfig dataclasses and the enumerations the rules accept;
- v1.py: the rules of a v1 recipe; llmft.py: the translation of an LLMFT recipe into one;
- devices.py: trainer.accelerator and whether a job wants GPUs;
- mesh.py: the device mesh and gradient accumulation arithmetic;
- tracking_keys.py: the MLflow / W&B keys; secret.py: which keys hold secrets.

hpctl's JSON schemas describe shapes for editors, and a test proves their enums equal the
constants. Torch-free on purpose: importing it costs milliseconds.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from adapter import ft_config, llmft
from adapter.digest import digest
from adapter.mesh import MeshShape, mesh_shape
from adapter.reader import ConfigError, Reader
from adapter.tracking_keys import tracking
from adapter.trainconfig import PRECISIONS, LoraConfig, ParallelConfig, TrainConfig
from adapter.v1 import from_v1, lora_config, parallel_config, precision_raw


def load(path: str | Path) -> TrainConfig:
    """Read a spec file (JSON, or YAML by extension) and build the TrainConfig."""
    doc, recipe = read_spec(path)
    cfg = from_recipe(recipe)
    if cfg.tracking is not None:  # tag runs with the digest hpctl records in state for this spec
        cfg = replace(cfg, tracking=replace(cfg.tracking, spec_digest=digest(doc)))
    return cfg


def read_spec(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the spec, its recipe) from a spec file (JSON, or YAML by extension), or ConfigError saying
    what is wrong with the file: what every job program (trainer, evaluation) reads first."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml  # only YAML specs need it; hpctl writes JSON
            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user error
        raise ConfigError("--config", f"{path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError("--config", f"{path} must hold a mapping")
    recipe = doc.get("recipes", doc)
    if not isinstance(recipe, dict):
        raise ConfigError("recipes", "must be a mapping")
    return doc, recipe


def from_recipe(recipe: Mapping[str, Any], world_size: int | None = None, files: bool = True) -> TrainConfig:
    """Validate a HyperPod v1 or LLMFT recipe and turn it into a TrainConfig; every refusal at once
    (InvalidConfig). `world_size` adds the mesh and batch rules; `files` reads the local model,
    tokenizer and data files the recipe names (the trainer does; hpctl only for local jobs)."""
    r = Reader(recipe)
    cfg = _build(r, recipe, world_size, files)
    r.check()
    assert cfg is not None
    return cfg


def problems(recipe: Mapping[str, Any], world_size: int | None = None, files: bool = False) -> list[ConfigError]:
    """Every reason the trainer would refuse this recipe (empty when it starts): what hpctl's plan
    asks. Keys are relative to the recipe."""
    r = Reader(recipe)
    _build(r, recipe, world_size, files)
    return r.errors


# The data paths the trainer reads, by role, under their v1 keys.
DATA_PATHS = {"train": "model.data.train_dir", "val": "model.data.val_dir"}


def data_paths(recipe: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Where the trainer reads its data: role ("train", "val") -> (the recipe's key, the path), for
    the keys set; {} for synthetic data. An LLMFT recipe's keys are its own (datasets.*.file_path).
    hpctl's plan asks this to compare the paths with a SageMaker job's input channels."""
    r = Reader(recipe)
    if llmft.is_llmft(recipe):
        keys = {role: llmft.LLMFT_KEY[key] for role, key in DATA_PATHS.items()}
    elif r.bool("model.data.use_synthetic_data", False):
        return {}
    else:
        keys = dict(DATA_PATHS)
    return {role: (key, value) for role, key in keys.items() if (value := r.str(key)) is not None}


def _build(r: Reader, recipe: Mapping[str, Any], world_size: int | None, files: bool) -> TrainConfig | None:
    if llmft.is_llmft(recipe):
        cfg = llmft.build(r, lambda inner: from_v1(inner, inner.recipe, world_size), files)
    else:
        cfg = from_v1(r, recipe, world_size)
    sends = r.guard(None, tracking, recipe)  # both formats: v2 keeps its mlflow section outside the v1 view
    return None if cfg is None or r.errors else replace(cfg, tracking=sends)


def precision_of(recipe: Mapping[str, Any]) -> str | None:
    """What a v1 recipe computes in ("bf16" or "fp32"), None when the trainer refuses its
    precision: hpctl's memory estimate asks this rather than read the keys its own way."""
    return PRECISIONS.get(precision_raw(Reader(recipe)).lower())


def lora_of(recipe: Mapping[str, Any]) -> LoraConfig | None:
    """The LoRA adapters a v1 recipe trains (type, rank, targets, dropout as the trainer reads
    them, defaults included), None without them or when the trainer refuses them: hpctl's memory
    estimate asks this rather than parse model.peft its own way."""
    r = Reader(recipe)
    lora = lora_config(r, ParallelConfig(tp=1, sharding_strategy="full_shard", shard_degree=None,
                                         activation_checkpointing=False, cpu_offload=False, compile=False,
                                         precision="bf16"))  # no parallel rule bears on what the adapters are
    return None if r.errors else lora


def planned_mesh(recipe: Mapping[str, Any], world: int) -> MeshShape | None:
    """The mesh each trainer builds for a v1 recipe's parallel keys when the job runs `world`
    processes (under fault tolerance, one replica group's mesh), None when it would refuse them
    (the plan then says why): hpctl's memory estimate asks this rather than redo the arithmetic of
    shard groups."""
    r = Reader(recipe)
    p = parallel_config(r, "fp32", "gpu")  # the mesh depends on neither
    ft = ft_config.read(r, p, None)
    if r.errors:
        return None
    try:
        return mesh_shape(p, ft_config.mesh_world(ft, world))
    except ConfigError:
        return None
