"""The plan counts the architecture the job will build: a readable checkpoint's config.json, else
adapter.known_models' table by hub id, else the recipe's fields (and says what they lack).
Stand-in checkpoint directories hold only config.json, as the acceptance asks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter import known_models
from hpctl.checks import memory_estimate
from hpctl.compose import compose
from hpctl.errors import HpctlError
from hpctl.plan import summarize, verify
from hpctl.workspace import Workspace
from helpers.workspace import SHARED

V1 = Workspace(SHARED / "peer-recipes" / "hyperpod-v1")
R1 = ["recipes=fine-tuning/deepseek/hf_deepseek_r1_671b_seq8k_gpu_lora", "base_results_dir=/r",
      "recipes.trainer.num_nodes=5", "recipes.model.data.train_dir=/fsx/train", "container=/fsx/img.sqsh"]
MIXTRAL = ["recipes=training/mixtral/hf_mixtral_8x7b_seq8k_gpu_p5x16_pretrain", "base_results_dir=/r",
           "recipes.model.data.train_dir=/fsx/train", "container=/fsx/img.sqsh"]


def _checkpoint(tmp_path: Path, hub: str, **changes) -> str:
    """A stand-in checkpoint: a directory holding only config.json (as transformers writes it)."""
    (tmp_path / "config.json").write_text(json.dumps({**known_models.HUB[hub], **changes,
                                                      "architectures": ["X"], "torch_dtype": "bfloat16"}))
    return str(tmp_path)


def _summary(args: list[str]) -> dict:
    spec = compose(args, workspace=V1)
    verify(spec)
    return summarize(spec, memory_estimate(spec))


def test_deepseek_r1_671b_from_its_checkpoint_plans_671b_with_37b_active(tmp_path: Path) -> None:
    s = _summary([*R1, f"recipes.model.hf_model_name_or_path={_checkpoint(tmp_path, 'deepseek-ai/DeepSeek-R1')}"])
    assert round(s["parameters"] / 1e9) == 671 and 37 < s["active_parameters"] / 1e9 < 38  # 37.55B
    assert f"architecture from the checkpoint {tmp_path}/config.json" in s["notes"]
    # 671B frozen fp32 weights over 40 shards alone are 67 GB: more than an H100 holds with the rest.
    assert s["memory_gb_per_device"] > 80 and s["memory_fraction"] > 1


def test_deepseek_r1_by_hub_id_uses_the_table() -> None:
    s = _summary([*R1, "recipes.model.hf_model_name_or_path=deepseek-ai/DeepSeek-R1"])
    assert round(s["parameters"] / 1e9) == 671 and "architecture from the hub table: deepseek-ai/DeepSeek-R1" in s["notes"]


def test_deepseek_r1_without_a_readable_checkpoint_says_it_counts_dense() -> None:
    s = _summary([*R1, "recipes.model.hf_model_name_or_path=/fsx/only/on/the/cluster"])
    assert round(s["parameters"] / 1e9) == 39 and s["active_parameters"] is None
    assert any(n.endswith("no expert fields: counted as dense") for n in s["notes"])


def test_mixtral_from_its_checkpoint(tmp_path: Path) -> None:
    s = _summary([*MIXTRAL, f"recipes.model.hf_model_name_or_path={_checkpoint(tmp_path, 'mistralai/Mixtral-8x7B-v0.1')}"])
    assert round(s["parameters"] / 1e9, 1) == 46.7 and round(s["active_parameters"] / 1e9, 1) == 12.9


def test_a_recipe_field_contradicting_the_checkpoint_is_refused_at_its_line(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, "mistralai/Mixtral-8x7B-v0.1", num_local_experts=4)
    with pytest.raises(HpctlError) as e:
        verify(compose([*MIXTRAL, f"recipes.model.hf_model_name_or_path={ckpt}"], workspace=V1))
    [p] = [p for p in e.value.problems if p.key == "recipes.model.num_local_experts"]
    assert str(p.origin) == "recipes/training/mixtral/hf_mixtral_8x7b_seq8k_gpu_p5x16_pretrain.yaml:92:22"
    assert f"model.num_local_experts is 8, but the checkpoint {ckpt}/config.json says 4" in p.message


def test_the_trainer_checks_the_checkpoints_shapes(tmp_path: Path) -> None:
    """tensor parallelism must divide the checkpoint's heads, which the recipe need not repeat."""
    ckpt = _checkpoint(tmp_path, "meta-llama/Llama-3.2-3B-Instruct")
    from adapter.config import ConfigError, from_recipe
    recipe = compose([*MIXTRAL[:1], "base_results_dir=/r"], workspace=V1).recipe  # any v1 recipe's keys
    recipe["model"] = {"model_type": "llama_v3", "do_finetune": True, "hf_model_name_or_path": ckpt,
                       "tensor_model_parallel_degree": 16, "data": {"use_synthetic_data": True}}
    with pytest.raises(ConfigError) as e:
        from_recipe(recipe, 16)
    assert any("16 does not divide model.num_attention_heads (24)" in x.message for x in e.value.errors)
