"""Training and validation data through torchdata's StatefulDataLoader.

Sources (model.data): synthetic tokens; HyperPod's pre-tokenized format (`dataset_type: hf`: an
arrow directory from `save_to_disk`, or *.json / *.json.gz rows with input_ids, attention_mask
and labels) from train_dir / val_dir; raw-text JSONL (`dataset_type: jsonl`, a `text` field per
line) tokenized with a local tokenizer and packed into sequences of max_context_width tokens.

Every sample has a fixed place in one global stream, whatever the layout: optimizer step s,
micro-step m, data-parallel rank r and row b read stream position
  s * G + (m * dp + r) * micro + b,    G = micro * dp * accumulation (the global batch),
and position p is sample p (synthetic) or the (p mod N)-th entry of epoch p div N's seeded
permutation. So a step sees the same samples under any data-parallel size, and a checkpoint's
step alone says where to continue; the loader state saved beside it restores the exact iterator
(workers, prefetch) when the layout is unchanged.
"""
from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import Dataset

from adapter.config import ConfigError, DataConfig, resolve_local

# torchdata 0.11 calls a deprecated torch hook in every loader's constructor; the warning is noise.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated")

SYNTHETIC_VAL_BATCHES = 8  # a "full" pass over the (endless) synthetic validation stream


class SyntheticDataset(Dataset):
    """Endless learnable sequences: sample i counts from a random start with a random stride
    (mod vocab), both drawn from a generator seeded by (seed, i). A model can learn them, so a
    falling loss shows training works, and they cost nothing to make."""

    def __init__(self, vocab_size: int, seq_len: int, seed: int) -> None:
        self.vocab_size, self.seq_len, self.seed = vocab_size, seq_len, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        start = torch.randint(self.vocab_size, (1,), generator=g)
        stride = torch.randint(1, 8, (1,), generator=g)
        ids = (start + stride * torch.arange(self.seq_len)) % self.vocab_size
        return {"input_ids": ids, "labels": ids.clone()}


class TokenizedDataset(Dataset):
    """Pre-tokenized rows, truncated or padded (labels -100, attention_mask 0) to seq_len."""

    def __init__(self, rows: Any, seq_len: int) -> None:
        self.rows, self.seq_len = rows, seq_len

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index]
        ids = list(row["input_ids"])[: self.seq_len]
        labels = list(row.get("labels") or ids)[: self.seq_len]
        mask = list(row.get("attention_mask") or [1] * len(ids))[: self.seq_len]
        pad = self.seq_len - len(ids)
        return {"input_ids": torch.tensor(ids + [0] * pad),
                "labels": torch.tensor(labels + [-100] * pad),
                "attention_mask": torch.tensor(mask + [0] * pad)}


class PackedDataset(Dataset):
    """One long token stream cut into consecutive seq_len windows (the remainder is dropped)."""

    def __init__(self, tokens: torch.Tensor, seq_len: int) -> None:
        self.tokens, self.seq_len = tokens, seq_len

    def __len__(self) -> int:
        return len(self.tokens) // self.seq_len

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.tokens[index * self.seq_len:(index + 1) * self.seq_len].long()
        return {"input_ids": ids, "labels": ids.clone()}


class StreamSampler:
    """Batch sampler for one data-parallel rank: yields its micro-batches of the global stream
    (see the module docstring), forever. Its state is the number of micro-batches yielded."""

    def __init__(self, num_samples: int | None, micro: int, accum: int, dp_rank: int, dp_size: int,
                 seed: int, shuffle: bool) -> None:
        self.num_samples, self.micro, self.accum = num_samples, micro, accum
        self.dp_rank, self.dp_size, self.seed, self.shuffle = dp_rank, dp_size, seed, shuffle
        self.yielded = 0
        self._perm: tuple[int, torch.Tensor] | None = None

    def __iter__(self) -> "StreamSampler":
        return self

    def __next__(self) -> list[int]:
        step, micro_step = divmod(self.yielded, self.accum)
        base = step * self.micro * self.dp_size * self.accum + (micro_step * self.dp_size + self.dp_rank) * self.micro
        self.yielded += 1
        return [self._index(base + b) for b in range(self.micro)]

    def _index(self, position: int) -> int:
        if self.num_samples is None:
            return position
        epoch, offset = divmod(position, self.num_samples)
        if not self.shuffle:
            return offset
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = (epoch, torch.randperm(self.num_samples, generator=g))
        return int(self._perm[1][offset])

    def seek(self, step: int) -> None:
        """Continue at optimizer step `step` (used when the layout changed since the checkpoint)."""
        self.yielded = step * self.accum

    def state_dict(self) -> dict[str, int]:
        return {"yielded": self.yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.yielded = state["yielded"]


class TrainData:
    """The training loader of one rank, with checkpointable state."""

    def __init__(self, dataset: Dataset, cfg: DataConfig, micro: int, accum: int, dp_rank: int,
                 dp_size: int, seed: int) -> None:
        from torchdata.stateful_dataloader import StatefulDataLoader
        synthetic = isinstance(dataset, SyntheticDataset)
        self.layout = [micro, accum, dp_size]
        self.sampler = StreamSampler(None if synthetic else len(dataset), micro, accum, dp_rank, dp_size,
                                     seed, shuffle=not synthetic)
        self.loader = StatefulDataLoader(dataset, batch_sampler=self.sampler, num_workers=cfg.num_workers)
        self._iter: Iterator[dict[str, torch.Tensor]] | None = None

    def next(self) -> dict[str, torch.Tensor]:
        if self._iter is None:
            self._iter = iter(self.loader)
        return next(self._iter)

    def state_dict(self) -> dict[str, Any]:
        return {"layout": self.layout, "loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None, step: int) -> None:
        """Restore the exact iterator if the checkpoint had this layout, else seek to `step`."""
        if state is not None and state["layout"] == self.layout:
            self.loader.load_state_dict(state["loader"])
        else:
            self.sampler.seek(step)


def val_batches(dataset: Dataset, batch: int, limit: int | None, dp_rank: int, dp_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """The validation pass of one rank: the same batches every time, `limit` of them (None: all)."""
    from torchdata.stateful_dataloader import StatefulDataLoader
    synthetic = isinstance(dataset, SyntheticDataset)
    full = SYNTHETIC_VAL_BATCHES if synthetic else len(dataset) // (batch * dp_size)
    count = full if limit is None else limit if synthetic else min(limit, full)
    sampler = StreamSampler(None if synthetic else len(dataset), batch, 1, dp_rank, dp_size, 0, shuffle=False)
    loader = iter(StatefulDataLoader(dataset, batch_sampler=sampler))
    for _ in range(count):
        yield next(loader)


def build_datasets(cfg: DataConfig, vocab_size: int, seed: int) -> tuple[Dataset, Dataset | None]:
    """(train, validation or None)."""
    if cfg.synthetic:
        return SyntheticDataset(vocab_size, cfg.seq_len, seed), SyntheticDataset(vocab_size, cfg.seq_len, seed + 1)
    tokenizer = _tokenizer(cfg, vocab_size) if cfg.dataset_type == "jsonl" else None
    load = (lambda d: _packed(d, tokenizer, cfg.seq_len)) if tokenizer else (lambda d: _pretokenized(d, cfg.seq_len))
    return load(cfg.train_dir), (load(cfg.val_dir) if cfg.val_dir else None)


def _files(directory: str, patterns: tuple[str, ...], key: str) -> list[Path]:
    path = Path(directory)
    if path.is_file():
        return [path]
    files = sorted(f for pattern in patterns for f in path.glob(pattern)) if path.is_dir() else []
    if not files:
        raise ConfigError(key, f"{directory} holds no {' / '.join(patterns)} files")
    return files


def _read_json_rows(file: Path) -> list[dict[str, Any]]:
    """JSON lines, or one JSON array, optionally gzipped."""
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rt") as handle:
        text = handle.read()
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _pretokenized(directory: str, seq_len: int) -> TokenizedDataset:
    path = Path(directory)
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        import datasets
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            loaded = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
        return TokenizedDataset(loaded, seq_len)
    rows = [row for f in _files(directory, ("*.json", "*.json.gz", "*.jsonl", "*.jsonl.gz"), "model.data.train_dir")
            for row in _read_json_rows(f)]
    if rows and "input_ids" not in rows[0]:
        raise ConfigError("model.data.dataset_type", f"{directory} rows have no input_ids",
                          "raw text needs dataset_type: jsonl and a tokenizer")
    return TokenizedDataset(rows, seq_len)


def _tokenizer(cfg: DataConfig, vocab_size: int) -> Any:
    import transformers
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_local(cfg.tokenizer, "model.data.tokenizer_name_or_path"))
    if len(tokenizer) > vocab_size:
        raise ConfigError("model.data.tokenizer_name_or_path", f"the tokenizer has {len(tokenizer)} tokens, "
                          f"more than the model's vocab_size {vocab_size}")
    return tokenizer


def _packed(directory: str, tokenizer: Any, seq_len: int) -> PackedDataset:
    ids: list[int] = []
    for file in _files(directory, ("*.jsonl", "*.jsonl.gz", "*.json", "*.json.gz"), "model.data.train_dir"):
        for row in _read_json_rows(file):
            ids.extend(tokenizer(row["text"], add_special_tokens=False)["input_ids"])
            if tokenizer.eos_token_id is not None:
                ids.append(tokenizer.eos_token_id)
    dataset = PackedDataset(torch.tensor(ids, dtype=torch.int32), seq_len)
    if len(dataset) == 0:
        raise ConfigError("model.data.train_dir", f"{directory} holds fewer than {seq_len} tokens")
    return dataset
