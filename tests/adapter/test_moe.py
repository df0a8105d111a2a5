"""A tiny Mixtral (4 experts, top 2) on pre-tokenized json.gz data: it learns, and tensor
parallelism (experts split across ranks) follows the single process."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.trainer import losses, ok, records, tiny_recipe, torchrun

pytestmark = pytest.mark.slow


def test_tiny_mixtral_trains_and_tensor_parallel_matches(tokenized_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """The vocabulary (257, odd) does not divide tp 2: the embedding and LM head are not split."""
    train_dir, val_dir = tokenized_dirs
    model = {"model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 64,
             "vocab_size": 257,
             "optim": {"lr": 0.01}, "data": {"use_synthetic_data": False, "dataset_type": "hf",
                                             "train_dir": str(train_dir), "val_dir": str(val_dir)}}
    single, split = tmp_path / "single", tmp_path / "tp"
    ok(torchrun(tiny_recipe(single, trainer={"max_steps": 10, "val_check_interval": 5}, model=model), 1))
    ok(torchrun(tiny_recipe(split, trainer={"max_steps": 10, "val_check_interval": 5},
                            model={**model, "tensor_model_parallel_degree": 2}), 2))
    one, two = losses(single), losses(split)
    assert one[10] < one[1] - 0.3, one
    assert all(abs(one[s] - two[s]) < 1e-4 for s in one), (one, two)
    vals = [r["val_loss"] for r in records(single) if "val_loss" in r]
    assert len(vals) == 2 and vals[1] < vals[0]
