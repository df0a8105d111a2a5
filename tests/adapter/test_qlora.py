"""QLoRA: HyperPod's v1 `hf_llama3_405b_seq8k_gpu_qlora` recipe, shrunk in sizes only, fine-tunes a
tiny Llama with its frozen base held in 4-bit NF4 under FSDP2 (2 CPU processes): the loss falls,
only the adapters change, a resumed run is exact, and the adapter export loads with peft."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.helpers.trainer import losses, records
from tests.adapter.hyperpod import V1, compose, require, tiny_checkpoint, train_on_two_ranks
from tests.adapter.test_families import SHRINK

RECIPE = "fine-tuning/llama/hf_llama3_405b_seq8k_gpu_qlora"
OVERRIDES = [o for o in SHRINK if "max_steps" not in o] + [
    "recipes.trainer.max_steps=4",
    "recipes.exp_manager.checkpoint_callback_params.save_top_k=-1",  # the recipe keeps none
    "recipes.exp_manager.checkpoint_callback_params.every_n_train_steps=2",
]



@pytest.mark.slow
def test_qlora_recipe_trains_adapters_over_a_4bit_base(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from peft import PeftModel
    from safetensors.torch import load_file
    from torchao.quantization import to_nf4
    from transformers import AutoModelForCausalLM

    from adapter.qlora import BLOCK, _scaler_block
    require(V1)
    spec = compose(V1, RECIPE, tmp_path / "a", OVERRIDES)
    assert spec["recipes"]["model"]["peft"]["peft_type"] == "qlora_4bit"
    base_dir = tiny_checkpoint(spec["recipes"], tmp_path / "base")
    spec = compose(V1, RECIPE, tmp_path / "a", OVERRIDES + [f"recipes.model.hf_model_name_or_path={base_dir}"])
    results = Path(spec["recipes"]["run"]["results_dir"])
    first = train_on_two_ranks(spec, tmp_path / "a.json")
    assert "adapter: QLoRA: 14 frozen linear weights held in 4-bit NF4" in first.stdout  # 7 per layer

    rows = records(results)
    val = [r["val_loss"] for r in rows]
    assert len(rows) == 4 and all(math.isfinite(v) for v in val) and val[-1] < val[0], rows

    # The checkpoint holds the adapters (and their optimizer state) only.
    ckpt = results / "checkpoints" / "sharded" / "step_00000002"
    saved = [k for k in dcp.FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata if k.startswith("model.")]
    assert saved and all(".lora_" in k for k in saved), saved

    # Only the adapters trained: the merged export is the base as NF4 holds it, plus B @ A on the
    # targeted projections (peft's default for Llama: q_proj, v_proj); embeddings, head and norms
    # are the base's own.
    base = load_file(base_dir / "model.safetensors")
    merged = load_file(results / "checkpoints" / "full" / "step_00000004" / "model.safetensors")
    assert merged.keys() == base.keys()
    for key, weight in base.items():
        if ".mlp." in key or ".self_attn." in key:
            held = to_nf4(weight, BLOCK, _scaler_block(key, weight.shape, 2)).get_original_weight()
            if key.endswith(("q_proj.weight", "v_proj.weight")):
                assert not torch.allclose(merged[key], held), key
            else:
                assert torch.equal(merged[key], held), key
        else:
            assert torch.equal(merged[key], weight), key

    # The adapter loads with peft onto the full-precision base model.
    adapter_dir = results / "checkpoints" / "peft" / "step_00000004"
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)
    exported = load_file(adapter_dir / "adapter_model.safetensors")
    loaded = {k.replace(".default", ""): v for k, v in peft_model.state_dict().items() if ".lora_" in k}
    assert exported.keys() == loaded.keys() and all(torch.equal(exported[k], loaded[k]) for k in exported)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in exported.items())

    # A second run resuming from step 2 repeats steps 3 and 4 exactly.
    resumed_spec = compose(V1, RECIPE, tmp_path / "b", OVERRIDES + [f"recipes.model.hf_model_name_or_path={base_dir}",
                                                                     f"recipes.exp_manager.resume_from_checkpoint={ckpt}"])
    second = train_on_two_ranks(resumed_spec, tmp_path / "b.json")
    assert "resumed from" in second.stdout and "at step 2" in second.stdout
    again = Path(resumed_spec["recipes"]["run"]["results_dir"])
    assert losses(again) == {s: l for s, l in losses(results).items() if s > 2}
    name = "peft/step_00000004/adapter_model.safetensors"
    assert (again / "checkpoints" / name).read_bytes() == (results / "checkpoints" / name).read_bytes()
