"""fp8 training (torchao float8) on HyperPod's own fp8 recipe, on the CPU: torch 2.13's CPU build
runs torch._scaled_mm, so the float8 path is the real one, only slow. One straight run and one run
resumed from its middle checkpoint check: the recipe's fp8 is honoured (decoder Linears in float8,
FSDP2 all-gathering float8 weights, activation checkpointing as written), the loss falls, the
resumed run continues bitwise, and the Hugging Face export holds full-precision weights that
transformers loads as plain Linear layers."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.helpers.trainer import records
from tests.adapter.hyperpod import V1, compose, require, tiny_checkpoint, train_on_two_ranks
from tests.adapter.test_families import SHRINK

RECIPE = "fine-tuning/llama/hf_llama3_8b_seq8k_gpu_fine_tuning"  # fp8: True, activation checkpointing
STEPS = SHRINK + [  # 3 steps, sizes shrunk; fp8 and activation checkpointing as written
    "recipes.exp_manager.checkpoint_callback_params.save_top_k=-1",  # keep the middle checkpoint
    "recipes.exp_manager.checkpoint_callback_params.every_n_train_steps=2",
]



@pytest.mark.slow
def test_fp8_recipe_trains_resumes_exactly_and_exports_full_precision(tmp_path: Path) -> None:
    pytest.importorskip("torchao")
    require(V1)
    spec = compose(V1, RECIPE, tmp_path, STEPS)
    model = spec["recipes"]["model"]
    assert model["fp8"] is True and model["activation_checkpointing"] is True
    base = tiny_checkpoint(spec["recipes"], tmp_path / "base")
    overrides = STEPS + [f"recipes.model.hf_model_name_or_path={base}"]
    spec = compose(V1, RECIPE, tmp_path / "straight", overrides)
    proc = train_on_two_ranks(spec, tmp_path / "straight.json")
    # 2 layers x (q, k, v, o, gate, up, down); the embedding and head stay in full precision
    assert "fp8: 14 Linear layers train in float8 (torchao, tensorwise dynamic scaling, float8 all-gather on)" in proc.stdout
    results = Path(spec["recipes"]["run"]["results_dir"])
    rows = records(results)
    losses, val = [r["loss"] for r in rows], [r["val_loss"] for r in rows]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses + val), rows
    assert losses[-1] < losses[0] and val[-1] < val[0], rows

    middle = Path(spec["recipes"]["exp_manager"]["checkpoint_dir"]) / "sharded" / "step_00000002"
    resumed_spec = compose(V1, RECIPE, tmp_path / "resumed",
                           overrides + [f"recipes.exp_manager.resume_from_checkpoint={middle}"])
    resumed = Path(resumed_spec["recipes"]["run"]["results_dir"])
    assert "resumed from" in train_on_two_ranks(resumed_spec, tmp_path / "resumed.json").stdout
    assert [r["loss"] for r in records(resumed)] == losses[2:]

    export = Path(spec["recipes"]["exp_manager"]["checkpoint_dir"]) / "full" / "step_00000003"
    again = Path(resumed_spec["recipes"]["exp_manager"]["checkpoint_dir"]) / "full" / "step_00000003"
    assert (export / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    weights = load_file(export / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}
    loaded = AutoModelForCausalLM.from_pretrained(export)
    q_proj = loaded.model.layers[0].self_attn.q_proj
    assert type(q_proj) is torch.nn.Linear
    assert torch.equal(q_proj.weight, weights["model.layers.0.self_attn.q_proj.weight"])
