"""Multi-modal: HyperPod's v1 `hf_llama3_2_11b_seq8k_gpu_p5x4_pretrain` (Llama 3.2 Vision,
multi_modal: True), its architecture shrunk (a tiny Mllama checkpoint directory in place of the
Hub id), trains on generated image-text samples under FSDP2 with 2 CPU processes: the loss falls,
a resumed run is exact, and the export loads with transformers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.trainer import losses, records
from tests.adapter.hyperpod import V1, compose, require, train_on_two_ranks
from tests.adapter.test_families import SHRINK

RECIPE = "training/llama/hf_llama3_2_11b_seq8k_gpu_p5x4_pretrain"
WORDS = ["[UNK]", "[PAD]", "<|begin_of_text|>", "<|end_of_text|>", "<|image|>", "<|python_tag|>",
         "red", "blue", "green", "square", "on", "a", "page"]
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def tiny_vision_model(out: Path) -> Path:
    """A Mllama config (vision tower: 28x28 images, one tile) with its processor: word-level
    tokenizer and an image processor for that size."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import MllamaConfig, MllamaImageProcessor, MllamaProcessor, PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    images = MllamaImageProcessor(size={"height": 28, "width": 28}, max_image_tiles=1)
    MllamaProcessor(images, tokenizer).save_pretrained(out)
    MllamaConfig(
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_global_layers": 1, "attention_heads": 2,
                       "intermediate_size": 64, "vision_output_dim": 64, "image_size": 28, "patch_size": 14,
                       "max_num_tiles": 1, "intermediate_layers_indices": [0], "supported_aspect_ratios": [[1, 1]]},
        text_config={"vocab_size": len(WORDS), "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "intermediate_size": 128, "cross_attention_layers": [1],
                     "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 1, "max_position_embeddings": 64},
        image_token_index=vocab["<|image|>"]).save_pretrained(out)
    return out


def image_text_dir(out: Path, count: int = 16) -> Path:
    """The documented format: a JSONL of {image, text} beside generated PNGs; the text names the colour."""
    from PIL import Image
    (out / "images").mkdir(parents=True)
    lines = []
    for i in range(count):
        colour = list(COLOURS)[i % len(COLOURS)]
        Image.new("RGB", (40, 32), COLOURS[colour]).save(out / "images" / f"{i:03d}.png")
        lines.append(json.dumps({"image": f"images/{i:03d}.png", "text": f"a {colour} square on a page"}))
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return out


OVERRIDES = [o for o in SHRINK if "model." not in o or "optim" in o or "train_batch_size" in o] + [
    "recipes.model.max_context_width=16",
    "recipes.model.shard_degree=null",
    "recipes.trainer.limit_val_batches=0",
    "recipes.exp_manager.checkpoint_callback_params.save_top_k=-1",  # the recipe keeps none
    "recipes.exp_manager.checkpoint_callback_params.every_n_train_steps=2",
    "recipes.exp_manager.export_full_model.save_last=true",
]



@pytest.mark.slow
def test_llama32_vision_recipe_trains_on_image_text(tmp_path: Path) -> None:
    import torch
    from transformers import MllamaForConditionalGeneration
    require(V1)
    model_dir, data_dir = tiny_vision_model(tmp_path / "model"), image_text_dir(tmp_path / "data")
    extra = [f"recipes.model.hf_model_name_or_path={model_dir}", f"recipes.model.data.train_dir={data_dir}"]
    spec = compose(V1, RECIPE, tmp_path / "a", OVERRIDES + extra)
    assert spec["recipes"]["model"]["multi_modal"] is True and spec["recipes"]["model"]["do_finetune"] is False
    results = Path(spec["recipes"]["run"]["results_dir"])
    train_on_two_ranks(spec, tmp_path / "a.json")
    loss = [r["loss"] for r in records(results)]
    assert len(loss) == 3 and all(math.isfinite(x) for x in loss) and loss[-1] < loss[0], loss

    export = results / "checkpoints" / "full" / "step_00000003"
    model, info = MllamaForConditionalGeneration.from_pretrained(export, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert (export / "processor_config.json").is_file()  # the processor travels with the model
    vision = [p for n, p in model.named_parameters() if "vision_model" in n]
    assert vision and all(torch.isfinite(p).all() for p in vision)

    # A second run resuming from step 2 repeats step 3 exactly (the vision tower trains too).
    ckpt = results / "checkpoints" / "sharded" / "step_00000002"
    resumed = compose(V1, RECIPE, tmp_path / "b", OVERRIDES + extra + [f"recipes.exp_manager.resume_from_checkpoint={ckpt}"])
    assert "at step 2" in train_on_two_ranks(resumed, tmp_path / "b.json").stdout
    again = Path(resumed["recipes"]["run"]["results_dir"])
    assert losses(again) == {3: losses(results)[3]}
    name = "full/step_00000003/model.safetensors"
    assert (again / "checkpoints" / name).read_bytes() == (results / "checkpoints" / name).read_bytes()
