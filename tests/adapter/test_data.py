"""Data: the global sample stream, loader state, and the three sources (in-process, no processes)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adapter.config import from_recipe
from adapter.data import (PackedDataset, StreamSampler, SyntheticDataset, TokenizedDataset, TrainData,
                          build_datasets, val_batches)
from tests.helpers.trainer import pattern_rows, tiny_recipe


def step_samples(dp: int, accum: int, micro: int, steps: int) -> list[set[int]]:
    """The sample indices each optimizer step reads, over all data-parallel ranks."""
    samplers = [StreamSampler(1000, micro, accum, r, dp, seed=3, shuffle=True) for r in range(dp)]
    return [{i for s in samplers for _ in range(accum) for i in next(s)} for _ in range(steps)]


def test_a_step_reads_the_same_samples_under_any_layout() -> None:
    one = step_samples(dp=1, accum=4, micro=2, steps=5)
    assert one == step_samples(dp=2, accum=2, micro=2, steps=5) == step_samples(dp=4, accum=1, micro=2, steps=5)
    assert all(len(s) == 8 for s in one) and len(set().union(*one)) == 40


def test_epochs_reshuffle_and_seek() -> None:
    sampler = StreamSampler(6, 2, 1, 0, 1, seed=0, shuffle=True)
    first, second = [i for _ in range(3) for i in next(sampler)], [i for _ in range(3) for i in next(sampler)]
    assert sorted(first) == sorted(second) == list(range(6)) and first != second
    sampler.seek(3)
    assert [i for _ in range(3) for i in next(sampler)] == second


def test_loader_state_resumes_at_the_next_batch(tmp_path: Path) -> None:
    """StatefulDataLoader's state (with a worker process and prefetching) restores the iterator."""
    cfg = from_recipe(tiny_recipe(tmp_path, model={"data": {"num_workers": 1}})).data
    dataset = TokenizedDataset(pattern_rows(40, 64, 256, seed=5), 64)
    ref = TrainData(dataset, cfg, micro=2, accum=1, dp_rank=0, dp_size=1, seed=1)
    batches = [ref.next()["input_ids"] for _ in range(7)]
    live = TrainData(dataset, cfg, 2, 1, 0, 1, 1)
    for _ in range(3):
        live.next()
    state = live.state_dict()
    resumed = TrainData(dataset, cfg, 2, 1, 0, 1, 1)
    resumed.load_state_dict(state, step=3)
    assert all(torch.equal(resumed.next()["input_ids"], b) for b in batches[3:])
    other_layout = TrainData(dataset, cfg, 1, 2, 0, 1, 1)  # same global batch, other split
    other_layout.load_state_dict(state, step=3)
    assert torch.equal(torch.cat([other_layout.next()["input_ids"] for _ in range(2)]), batches[3])


def test_synthetic_samples_are_deterministic_and_learnable() -> None:
    data = SyntheticDataset(256, 16, seed=1)
    ids = data[5]["input_ids"]
    assert torch.equal(ids, SyntheticDataset(256, 16, seed=1)[5]["input_ids"])
    stride = (ids[1] - ids[0]) % 256
    assert torch.equal((ids[1:] - ids[:-1]) % 256, torch.full((15,), int(stride)))
    assert len(list(val_batches(data, 2, None, 0, 1))) == 8


def test_pretokenized_arrow_and_json_gz_agree(tokenized_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    import datasets
    train_dir, _ = tokenized_dirs
    arrow = tmp_path / "arrow"
    datasets.Dataset.from_list(pattern_rows(96, 64, 256, seed=1)).save_to_disk(str(arrow))
    base = from_recipe(tiny_recipe(tmp_path, model={"data": {"use_synthetic_data": False, "train_dir": str(train_dir)}})).data
    from_json, _ = build_datasets(base, 256, seed=0)
    from_arrow, _ = build_datasets(from_recipe(tiny_recipe(tmp_path, model={"data": {
        "use_synthetic_data": False, "train_dir": str(arrow)}})).data, 256, seed=0)
    assert len(from_json) == len(from_arrow) == 96
    for i in (0, 50, 95):
        assert all(torch.equal(from_json[i][k], from_arrow[i][k]) for k in ("input_ids", "labels", "attention_mask"))


def test_short_rows_are_padded(tmp_path: Path) -> None:
    item = TokenizedDataset([{"input_ids": [5, 6, 7]}], 5)[0]
    assert item["input_ids"].tolist() == [5, 6, 7, 0, 0]
    assert item["labels"].tolist() == [5, 6, 7, -100, -100]
    assert item["attention_mask"].tolist() == [1, 1, 1, 0, 0]


def test_raw_text_is_tokenized_and_packed(tokenizer_dir: Path, text_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer
    cfg = from_recipe(tiny_recipe(tmp_path, model={"data": {
        "use_synthetic_data": False, "dataset_type": "jsonl", "train_dir": str(text_dir),
        "tokenizer_name_or_path": str(tokenizer_dir)}})).data
    train, val = build_datasets(cfg, 256, seed=0)
    assert isinstance(train, PackedDataset) and val is None
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    first = json.loads((text_dir / "part-0.jsonl").read_text().splitlines()[0])["text"]
    expected = tok(first, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert train[0]["input_ids"][: len(expected)].tolist() == expected
    assert all(len(train[i]["input_ids"]) == 64 for i in range(len(train)))
    with pytest.raises(Exception, match="more than the model's vocab_size"):
        build_datasets(cfg, 8, seed=0)
