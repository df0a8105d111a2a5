"""Hugging Face export round trip, and LoRA fine-tuning from that export on raw-text JSONL."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.trainer import export_dir, losses, ok, records, tiny_recipe, torchrun

pytestmark = pytest.mark.slow


def test_export_round_trips_through_transformers(baseline: Path) -> None:
    """The exported directory loads with AutoModelForCausalLM and reproduces the trainer's final
    validation loss on the same (synthetic, seed + 1) validation batches."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from adapter.data import SyntheticDataset

    model = AutoModelForCausalLM.from_pretrained(export_dir(baseline, 6)).eval()
    val = SyntheticDataset(256, 64, seed=7 + 1)
    ids = torch.stack([val[i]["input_ids"] for i in range(4)])  # 2 batches of 2
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1)).item()
    assert abs(loss - records(baseline)[-1]["val_loss"]) < 1e-5
    assert (baseline / "tensorboard").is_dir() and any((baseline / "tensorboard").iterdir())


def test_lora_trains_only_adapters(baseline: Path, tokenizer_dir: Path, text_dir: Path, tmp_path: Path) -> None:
    """LoRA on the baseline's export, FSDP2 over 2 processes, raw text tokenized and packed: the
    merged export differs from the base only in the targeted projections, and equals peft's own
    merge of the exported adapter."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base_dir = export_dir(baseline, 6)
    results = tmp_path / "results"
    recipe = tiny_recipe(results, trainer={"max_steps": 4, "limit_val_batches": 0}, model={
        "do_finetune": True, "hf_model_name_or_path": str(base_dir),
        "peft": {"peft_type": "lora", "rank": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "down_proj"]},
        "data": {"use_synthetic_data": False, "dataset_type": "jsonl", "train_dir": str(text_dir),
                 "tokenizer_name_or_path": str(tokenizer_dir)}})
    ok(torchrun(recipe, 2))
    assert sorted(losses(results)) == [1, 2, 3, 4]

    base = load_file(base_dir / "model.safetensors")
    merged_dir = export_dir(results, 4)
    merged = load_file(merged_dir / "model.safetensors")
    assert merged.keys() == base.keys()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed == {f"model.layers.{i}.{m}.weight" for i in (0, 1) for m in ("self_attn.q_proj", "mlp.down_proj")}
    assert (merged_dir / "tokenizer.json").is_file()

    adapter_dir = results / "checkpoints" / "peft" / "step_00000004"
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)
    theirs = peft_model.merge_and_unload().state_dict()
    assert max((theirs[k] - merged[k]).abs().max().item() for k in merged) < 1e-6
