"""Image-text data for vision-language models (model.multi_modal: true), e.g. Llama 3.2 Vision
(transformers' Mllama) and Llama 4.

The format (HyperPod documents none for its multi-modal recipes): model.data.train_dir (and
val_dir) hold `*.jsonl` files, one sample per line,

    {"image": "images/0001.png", "text": "a red square on a white page"}

`image` is a path relative to the JSONL file (or absolute), any format PIL reads; `text` is what
the model learns to produce after seeing the image. Each sample becomes the model processor's
`<|image|>` + text (the processor adds BOS), padded or cut to model.max_context_width; the loss
covers the text tokens (not the image token or padding). One image per sample, so every batch
has the same shape. The processor (image processor + tokenizer) is read from
model.data.tokenizer_name_or_path, else model.hf_model_name_or_path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from adapter.reader import ConfigError, resolve_local

# The vision inputs the model's forward takes besides input_ids and attention_mask.

from adapter.trainconfig import DataConfig
MODEL_INPUTS = ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask")


class ImageTextDataset(Dataset):
    def __init__(self, rows: list[tuple[Path, str]], processor: Any, seq_len: int) -> None:
        self.rows, self.processor, self.seq_len = rows, processor, seq_len

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from PIL import Image
        image_path, text = self.rows[index]
        with Image.open(image_path) as image:
            image = image.convert("RGB")
        out = self.processor(images=[[image]], text=[self.processor.image_token + text], padding="max_length",
                             truncation=True, max_length=self.seq_len, return_tensors="pt")
        sample = {k: v[0] for k, v in out.items()}
        labels = sample["input_ids"].clone()
        labels[(sample["attention_mask"] == 0) | (labels == self.processor.image_token_id)] = -100
        sample["labels"] = labels
        return sample


def build_datasets(cfg: DataConfig, vocab_size: int, seed: int) -> tuple[Dataset, Dataset | None]:
    """(train, validation or None) from the image-text JSONL of train_dir and val_dir."""
    import transformers
    key = "model.data.tokenizer_name_or_path"
    processor = transformers.AutoProcessor.from_pretrained(resolve_local(cfg.tokenizer, key))
    if not hasattr(processor, "image_token"):
        raise ConfigError(key, f"{cfg.tokenizer} has no image-text processor (preprocessor_config.json)",
                          "point it at the vision-language model's directory")
    train = ImageTextDataset(_rows(cfg.train_dir, "model.data.train_dir"), processor, cfg.seq_len)
    val = ImageTextDataset(_rows(cfg.val_dir, "model.data.val_dir"), processor, cfg.seq_len) if cfg.val_dir else None
    return train, val


def _rows(directory: str, key: str) -> list[tuple[Path, str]]:
    files = sorted(Path(directory).glob("*.jsonl"))
    if not files:
        raise ConfigError(key, f"{directory} holds no *.jsonl image-text files", "see adapter/README.md for the format")
    rows = []
    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(key, f"{file}:{number} is not JSON: {exc.msg}") from None
            if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not isinstance(row.get("text"), str):
                raise ConfigError(key, f"{file}:{number} needs an `image` path and a `text` string")
            image = file.parent / row["image"]
            if not image.is_file():
                raise ConfigError(key, f"{file}:{number}: image {image} does not exist")
            rows.append((image, row["text"]))
    return rows
