"""Fixtures of the trainer's tests (the helpers they use are tests/helpers/trainer.py).

The session-scoped runs (`baseline`, `fsdp2`) are shared by several tests: each launch costs
seconds of imports, so a run that several checks compare against is made once.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.trainer import WORDS, ok, pattern_rows, tiny_recipe, torchrun


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, 6 steps of 2 micro-batches (global batch 4), TensorBoard on: the reference."""
    results = tmp_path_factory.mktemp("baseline") / "results"
    ok(torchrun(tiny_recipe(results, exp_manager={"create_tensorboard_logger": True}), 1))
    return results


@pytest.fixture(scope="session")
def fsdp2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The baseline's recipe with FSDP2 over 2 processes (1 micro-batch each per step)."""
    results = tmp_path_factory.mktemp("fsdp2") / "results"
    ok(torchrun(tiny_recipe(results), 2))
    return results


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny word-level tokenizer (17 tokens), saved as a transformers tokenizer directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "[EOS]"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    out = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            eos_token="[EOS]").save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw-text JSONL (a `text` field per line): short repetitive sentences over WORDS."""
    import random
    rng = random.Random(0)
    out = tmp_path_factory.mktemp("text")
    lines = [json.dumps({"text": " ".join(rng.choice(WORDS) if i % 3 else "the" for i in range(rng.randint(5, 12)))})
             for _ in range(300)]
    (out / "part-0.jsonl").write_text("\n".join(lines[:150]) + "\n")
    (out / "part-1.jsonl").write_text("\n".join(lines[150:]) + "\n")
    return out


@pytest.fixture(scope="session")
def tokenized_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """HyperPod's pre-tokenized format as json.gz: (train_dir, val_dir), 64-token rows, vocab 256."""
    import gzip
    root = tmp_path_factory.mktemp("tokenized")
    dirs = []
    for name, count, seed in (("train", 96, 1), ("val", 16, 2)):
        (root / name).mkdir()
        with gzip.open(root / name / "data.json.gz", "wt") as f:
            f.writelines(json.dumps(row) + "\n" for row in pattern_rows(count, 64, 256, seed))
        dirs.append(root / name)
    return dirs[0], dirs[1]
