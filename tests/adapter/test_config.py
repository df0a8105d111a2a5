"""The spec reader and start-up refusals: fast, in-process, plus the one-line error of the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapter.config import from_recipe, load
from adapter.mesh import grad_accumulation
from adapter.reader import ConfigError
from tests.helpers.trainer import REPO, deep_merge, env, tiny_recipe, write_spec


def refused(tmp_path: Path, **sections: object) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        from_recipe(tiny_recipe(tmp_path, **sections))
    return exc.value


def test_reads_the_recipe_fields(tmp_path: Path) -> None:
    cfg = from_recipe(tiny_recipe(tmp_path, model={"sharding_strategy": "hybrid_shard", "shard_degree": 2,
                                                    "activation_checkpointing": True},
                                  exp_manager={"checkpoint_dir": str(tmp_path / "ck"),
                                               "checkpoint_callback_params": {"async_save": True}}))
    assert cfg.micro_batch == 2 and cfg.global_batch == 4 and cfg.max_steps == 6 and cfg.seed == 7
    assert cfg.parallel.sharding_strategy == "hybrid_shard" and cfg.parallel.shard_degree == 2
    assert cfg.parallel.activation_checkpointing and cfg.parallel.precision == "fp32"
    assert cfg.checkpoint.dir == tmp_path / "ck" and cfg.checkpoint.async_save and cfg.checkpoint.every_n_steps == 3
    assert cfg.checkpoint.keep == -1 and cfg.checkpoint.enabled
    assert cfg.optim.sched.name == "constant" and cfg.optim.sched.max_steps == 6
    assert cfg.data.synthetic and cfg.data.seq_len == 64
    assert cfg.val_every == 3 and cfg.val_batches == 2
    assert grad_accumulation(cfg, 1) == 2 and grad_accumulation(cfg, 2) == 1


def test_hyperpod_defaults(tmp_path: Path) -> None:
    """save_top_k 0 disables sharded checkpoints (HyperPod); bf16 is the default precision;
    limit_val_batches 1.0 means the whole validation set."""
    cfg = from_recipe(tiny_recipe(tmp_path, trainer={"precision": "bf16", "limit_val_batches": 1.0},
                                  exp_manager={"checkpoint_callback_params": {"save_top_k": 0}}))
    assert not cfg.checkpoint.enabled and cfg.parallel.precision == "bf16" and cfg.val_batches is None


# Every refusal the trainer makes at start, as (recipe sections merged into the tiny recipe, the key
# it names). tests/test_trainer_contract.py runs each through `hpctl validate` too: the plan must
# refuse the same recipes at the same keys.
REFUSALS = [
    ({"model": {"fp8": True, "fp8_amax_compute_algo": "mean"}}, "model.fp8_amax_compute_algo"),
    ({"model": {"context_parallel_degree": 2}}, "model.context_parallel_degree"),
    ({"model": {"sharding_strategy": "zero3"}}, "model.sharding_strategy"),
    ({"model": {"do_finetune": True}}, "model.hf_model_name_or_path"),
    ({"model": {"peft": {"peft_type": "qlora"}}}, "model.peft.peft_type"),
    ({"model": {"global_batch_size": 5}}, "model.global_batch_size"),
    ({"model": {"max_context_width": "${recipes.model.seq}"}}, "model.max_context_width"),
    ({"model": {"optim": {"sched": {"name": "CosineAnnealing", "min_lr": 1.0}}}}, "model.optim.sched.min_lr"),
    ({"model": {"data": {"use_synthetic_data": False}}}, "model.data.train_dir"),
    ({"model": {"data": {"dataset_type": "parquet"}}}, "model.data.dataset_type"),
    ({"trainer": {"precision": "16"}}, "trainer.precision"),
    ({"trainer": {"accelerator": "trn"}}, "trainer.accelerator"),
    ({"trainer": {"val_check_interval": 0.5}}, "trainer.val_check_interval"),
    ({"trainer": {"val_check_interval": 0}}, "trainer.val_check_interval"),
    ({"trainer": {"limit_val_batches": 0.25}}, "trainer.limit_val_batches"),
    ({"model": {"optim": {"lr": float("nan")}}}, "model.optim.lr"),
    ({"model": {"optim": {"sched": {"name": "CosineAnnealing", "warmup_steps": 50}}}}, "model.optim.sched.warmup_steps"),
    ({"model": {"dpo": {"enabled": True, "label_smoothing": 0.5}}}, "model.dpo.label_smoothing"),
    ({"model": {"num_key_value_heads": 3}}, "model.num_key_value_heads"),
    ({"model": {"hidden_size": 30}}, "model.hidden_size"),
    ({"model": {"model_type": "llama_v9"}}, "model.model_type"),
    ({"model": {"tensor_model_parallel_degree": 3}}, "model.tensor_model_parallel_degree"),
]


@pytest.mark.parametrize("sections, key", REFUSALS)
def test_unsupported_settings_are_refused(tmp_path: Path, sections: dict, key: str) -> None:
    assert refused(tmp_path, **sections).key == key


def test_lora_on_a_random_base_is_accepted(tmp_path: Path) -> None:
    """do_finetune false with LoRA trains adapters on a randomly initialised base (the catalog's
    tiny_llama_lora shows the mechanics without weights to download)."""
    cfg = from_recipe(tiny_recipe(tmp_path, model={"peft": {"peft_type": "lora", "rank": 4}}))
    assert cfg.lora is not None and cfg.lora.rank == 4 and not cfg.do_finetune


def test_fp8_offloading_and_context_parallelism(tmp_path: Path) -> None:
    """HyperPod's fp8 keys become torchao's tensorwise recipe (the amax history has no equivalent);
    offloading is read with a note the plan can state; CP > 1 is refused on CPUs with torch's reason,
    accepted for GPUs (and auto, which the run checks: tests/adapter/test_context_parallel.py)."""
    hyperpod = {"fp8": True, "fp8_amax_history_len": 1024, "fp8_amax_compute_algo": "max",
                "offload_activations": True, "activation_loading_horizon": 3}
    p = from_recipe(tiny_recipe(tmp_path, model=hyperpod)).parallel
    assert (p.fp8, p.offload_activations, p.activation_loading_horizon) == ("tensorwise", True, 3)
    assert "on a CPU-only run" in p.offload_note and "3 layer(s)" in p.offload_note
    plain = from_recipe(tiny_recipe(tmp_path)).parallel
    assert plain.fp8 is None and plain.offload_note is None
    on_cpu = refused(tmp_path, model={"context_parallel_degree": 2})
    assert "no CPU attention kernel" in on_cpu.message
    assert "_scaled_dot_product_flash_attention_for_cpu" in on_cpu.message and on_cpu.hint
    for accelerator in ("gpu", "auto"):
        cfg = from_recipe(tiny_recipe(tmp_path, trainer={"accelerator": accelerator, "precision": "bf16"},
                                      model={"context_parallel_degree": 2}))
        assert cfg.parallel.cp == 2


def _cp4(model: dict, precision: str = "bf16") -> dict:
    """Context parallelism of 4 on GPUs with `model` settings (the sections of a refusal case)."""
    return {"trainer": {"accelerator": "gpu", "precision": precision}, "model": {"context_parallel_degree": 4, **model}}


# The context-parallel refusals (recipe sections, the key named, words of the message); like
# REFUSALS, tests/test_trainer_contract.py runs each through `hpctl validate` too.
CONTEXT_PARALLEL_REFUSALS = [
    (_cp4({"max_context_width": 60}), "model.max_context_width", "nearest valid: 56 or 64"),
    (_cp4({"model_type": "mistral"}), "model.context_parallel_degree", "sliding window"),
    (_cp4({"model_type": "qwen_v2", "use_sliding_window": True}), "model.context_parallel_degree", "sliding window"),
    (_cp4({"model_type": "gpt_oss", "num_local_experts": 4, "num_experts_per_tok": 2}),
     "model.context_parallel_degree", "not gpt_oss"),
    (_cp4({"dpo": {"enabled": True}}), "model.context_parallel_degree", "DPO"),
    (_cp4({}, precision="32"), "trainer.precision", "use bf16"),
]


@pytest.mark.parametrize("sections, key, words", CONTEXT_PARALLEL_REFUSALS)
def test_context_parallel_rules(tmp_path: Path, sections: dict, key: str, words: str) -> None:
    """cp 4 on GPUs: the sequence splits into 2 x 4 equal chunks; only plain causal attention splits."""
    error = refused(tmp_path, **sections)
    assert error.key == key and words in str(error), str(error)


def test_context_parallel_families_that_split(tmp_path: Path) -> None:
    for model in ({}, {"model_type": "mistral", "sliding_window": None}, {"model_type": "qwen_v2"}):
        cfg = from_recipe(tiny_recipe(tmp_path, trainer={"accelerator": "gpu", "precision": "bf16"},
                                      model={"context_parallel_degree": 4, **model}))
        assert cfg.parallel.cp == 4


def test_lora_with_tensor_parallelism_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, model={"do_finetune": True, "hf_model_name_or_path": "/m", "tensor_model_parallel_degree": 2,
                                     "peft": {"peft_type": "lora"}})
    assert "tensor_model_parallel_degree" in str(error)


def test_mesh_shapes() -> None:
    from adapter.parallel import MeshShape, mesh_shape
    cfg = from_recipe(tiny_recipe(Path("/r"), model={"sharding_strategy": "hybrid_shard", "shard_degree": 2,
                                                     "tensor_model_parallel_degree": 2}))
    assert mesh_shape(cfg.parallel, 8) == MeshShape(replicate=2, shard=2, tp=2)
    with pytest.raises(ConfigError, match="shard_degree"):
        mesh_shape(cfg.parallel, 6)
    with pytest.raises(ConfigError, match="does not divide the world size 3"):
        mesh_shape(cfg.parallel, 3)
    assert mesh_shape(from_recipe(tiny_recipe(Path("/r"))).parallel, 4) == MeshShape(1, 4, 1)
    ddp = from_recipe(tiny_recipe(Path("/r"), model={"sharding_strategy": "no_shard"})).parallel
    assert mesh_shape(ddp, 4) == MeshShape(4, 1, 1)


def test_mesh_shapes_with_context_parallelism() -> None:
    """HyperPod's shard_degree counts FSDP's group, dp_shard x cp: its 70B 16k recipes (cp 2, shard
    256) on 32 and 64 p5 nodes, its 405B QLoRA ones (cp 8 and 16, shard 16) on 2."""
    from adapter.mesh import MeshShape, mesh_shape
    def parallel(cp: int, **model: object) -> object:
        return from_recipe(tiny_recipe(Path("/r"), trainer={"accelerator": "gpu", "precision": "bf16"},
                                       model={"context_parallel_degree": cp, **model})).parallel
    hybrid = {"sharding_strategy": "hybrid_shard", "shard_degree": 256}
    assert mesh_shape(parallel(2, **hybrid), 256) == MeshShape(replicate=1, shard=128, tp=1, cp=2)
    assert mesh_shape(parallel(2, **hybrid), 512) == MeshShape(replicate=2, shard=128, tp=1, cp=2)
    hybrid16 = {"sharding_strategy": "hybrid_shard", "shard_degree": 16}
    assert mesh_shape(parallel(8, **hybrid16), 16) == MeshShape(replicate=1, shard=2, tp=1, cp=8)
    assert mesh_shape(parallel(16, **hybrid16), 16) == MeshShape(replicate=1, shard=1, tp=1, cp=16)
    assert mesh_shape(parallel(2, tensor_model_parallel_degree=2), 8) == MeshShape(1, 2, 2, cp=2)
    assert mesh_shape(parallel(2, sharding_strategy="no_shard"), 4) == MeshShape(2, 1, 1, cp=2)
    with pytest.raises(ConfigError, match="multiple of context_parallel_degree"):
        mesh_shape(parallel(4, sharding_strategy="hybrid_shard", shard_degree=2), 8)
    with pytest.raises(ConfigError, match=r"2 x tensor_model_parallel_degree \(2\) does not divide the world size 6"):
        mesh_shape(parallel(2, tensor_model_parallel_degree=2), 6)


def test_spec_file_formats(tmp_path: Path) -> None:
    """hpctl's JSON spec (recipe under `recipes`), or a bare recipe in YAML."""
    import yaml
    recipe = tiny_recipe(tmp_path)
    assert load(write_spec(recipe, tmp_path / "spec.json")).name == "tiny"
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert load(tmp_path / "recipe.yaml").max_steps == 6


@pytest.mark.slow
@pytest.mark.parametrize("recipe_update, message", [
    ({"model": {"sharding_strategy": "zero3"}}, "adapter: error: model.sharding_strategy: 'zero3' is not supported"),
    ({"model": {"tensor_model_parallel_degree": 2}}, "adapter: error: model.tensor_model_parallel_degree: 2 does not divide the world size 1"),
    ({"model": {"hf_model_name_or_path": "nobody/absent-model"}}, "is neither a local directory nor in the Hugging Face cache"),
])
def test_cli_prints_one_line_and_exits_1(tmp_path: Path, recipe_update: dict, message: str) -> None:
    spec = write_spec(deep_merge(tiny_recipe(tmp_path / "r"), recipe_update), tmp_path / "spec.json")
    proc = subprocess.run([sys.executable, "-m", "adapter.train", "--config", str(spec)], cwd=REPO,
                          env=env(HF_HOME=str(tmp_path / "hf")), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
