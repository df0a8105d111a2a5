"""Training and validation data through torchdata's StatefulDataLoader.

Sources (model.data): synthetic tokens; HyperPod's pre-tokenized format (`dataset_type: hf`: an
arrow directory from `save_to_disk`, or *.json / *.json.gz rows with input_ids, attention_mask
and labels) from train_dir / val_dir; JSON lines (`dataset_type: jsonl`) tokenized with a local
tokenizer, in one of these row forms:
  {"text": ...}                          packed into sequences of max_context_width tokens;
  {"prompt": ..., "completion": ...}     one sample per row, loss on the completion (+ EOS) only;
  {"messages": [{"role", "content"}...]} one sample per row through the tokenizer's chat template,
                                         loss on the assistant replies only;
  {"input_ids": [...], "labels": [...]}  already tokenized.
Samples longer than max_context_width are cut; shorter ones are padded (no loss on padding).
Preference rows (prompt, chosen, rejected) are dpo.py's.

Every sample has a fixed place in one global stream, whatever the layout: optimizer step s,
micro-step m, data-parallel rank r and row b read stream position
  s * G + (m * dp + r) * micro + b,    G = micro * dp * accumulation (the global batch),
and position p is sample p (synthetic) or the (p mod N)-th entry of epoch p div N's seeded
permutation. So a step sees the same samples under any data-parallel size, and a checkpoint's
step alone says where to continue; the loader state saved beside it restores the exact iterator
(workers, prefetch) when the layout is unchanged.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import Dataset

from adapter import rows
from adapter.reader import ConfigError, resolve_local

# torchdata 0.11 calls a deprecated torch hook in every loader's constructor; the warning is noise.
from adapter.trainconfig import DataConfig
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
        # Start the iterator now, before the checkpoint's RNG state is restored: starting it draws
        # a seed from torch's generator, which a fresh run did before its first step, and a later
        # draw would shift every random number after resume (LoRA dropout masks).
        self._iter = iter(self.loader)


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
    if cfg.dataset_type == "hf":
        train, val = select_rows(cfg, _pretokenized_rows)
        return TokenizedDataset(train, cfg.seq_len), (TokenizedDataset(val, cfg.seq_len) if val is not None else None)
    tokenizer = load_tokenizer(cfg, vocab_size)
    train, val = select_rows(cfg, lambda path: rows.load(path, "model.data.train_dir"))
    make = (lambda r: _text_dataset(r, tokenizer, cfg))
    return make(train), (make(val) if val is not None else None)


def select_rows(cfg: DataConfig, read: Callable[[str], Any]) -> tuple[Any, Any | None]:
    """(training rows, validation rows or None): val_dir's rows, else the split of train_dir's
    (rows.train_val_indices, the same rule the LLMFT step count used)."""
    loaded = read(cfg.train_dir)
    fraction = 1.0 if cfg.val_dir else cfg.train_fraction
    train, val = rows.train_val_indices(len(loaded), cfg.limit, fraction, cfg.split_seed)
    if cfg.val_dir:
        return _subset(loaded, train), read(cfg.val_dir)
    return _subset(loaded, train), (_subset(loaded, val) if val else None)


def _subset(loaded: Any, indices: list[int]) -> Any:
    if indices == list(range(len(loaded))):
        return loaded
    return loaded.select(indices) if hasattr(loaded, "select") else [loaded[i] for i in indices]


def _pretokenized_rows(directory: str) -> Any:
    path = Path(directory)
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        import datasets
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            loaded = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
        return loaded
    found = rows.load(directory, "model.data.train_dir")
    if found and "input_ids" not in found[0]:
        raise ConfigError("model.data.dataset_type", f"{directory} rows have no input_ids",
                          "raw text, prompt/completion or chat rows need dataset_type: jsonl and a tokenizer")
    return found


def load_tokenizer(cfg: DataConfig, vocab_size: int) -> Any:
    import transformers
    if cfg.tokenizer is None:
        raise ConfigError("model.data.tokenizer_name_or_path", "is required to tokenize text rows")
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_local(cfg.tokenizer, "model.data.tokenizer_name_or_path"))
    if len(tokenizer) > vocab_size:
        raise ConfigError("model.data.tokenizer_name_or_path", f"the tokenizer has {len(tokenizer)} tokens, "
                          f"more than the model's vocab_size {vocab_size}")
    return tokenizer


def _text_dataset(loaded: list[dict[str, Any]], tokenizer: Any, cfg: DataConfig) -> Dataset:
    """Rows of one form, told by the first row's keys: `text` (packed), `prompt` + `completion`,
    `messages` (one padded sample per row, the prompt masked), or `input_ids` (pre-tokenized)."""
    keys = set(loaded[0]) if loaded else set()
    if "text" in keys:
        return _packed(loaded, tokenizer, cfg.seq_len, cfg.train_dir)
    if "input_ids" in keys:
        return TokenizedDataset(loaded, cfg.seq_len)
    if "messages" in keys or {"prompt", "completion"} <= keys:
        return TokenizedDataset([sft_example(row, tokenizer, cfg.mask_prompt) for row in loaded], cfg.seq_len)
    if "chosen" in keys:
        raise ConfigError("model.data.train_dir", f"{cfg.train_dir} holds preference rows (prompt, chosen, rejected)",
                          "they train with model.dpo.enabled (LLMFT: trainer_type dpo)")
    raise ConfigError("model.data.train_dir", f"{cfg.train_dir}: rows need text, prompt + completion, messages or "
                      f"input_ids, found keys {sorted(keys)}")


def encode(value: Any, tokenizer: Any, special: bool = False) -> list[int]:
    """Token ids of a string (through the tokenizer; `special` adds its BOS etc.) or of a list of ids."""
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return value
    if not isinstance(value, str):
        raise ConfigError("model.data.train_dir", f"expected text or a list of token ids, found {type(value).__name__}")
    if tokenizer is None:
        raise ConfigError("model.data.tokenizer_name_or_path", "is required to tokenize text rows")
    return tokenizer(value, add_special_tokens=special)["input_ids"]


def sft_example(row: dict[str, Any], tokenizer: Any, mask_prompt: bool) -> dict[str, list[int]]:
    """input_ids and labels of a prompt/completion or chat row; labels are -100 on the prompt (and
    on user/system turns) unless mask_prompt is false. A completion ends with the EOS token."""
    if "messages" in row:
        ids, labels = _chat(row["messages"], tokenizer)
    else:
        prompt = encode(row["prompt"], tokenizer, special=True)
        completion = encode(row["completion"], tokenizer) + _eos(tokenizer)
        ids, labels = prompt + completion, [-100] * len(prompt) + completion
    return {"input_ids": ids, "labels": labels if mask_prompt else list(ids)}


def _eos(tokenizer: Any) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer is not None and tokenizer.eos_token_id is not None else []


def _chat(messages: list[dict[str, str]], tokenizer: Any) -> tuple[list[int], list[int]]:
    """A conversation through the tokenizer's chat template, rendered one message at a time so each
    assistant reply (after its generation prompt) is the labelled span. Without a chat template:
    `role: content` lines, each assistant reply followed by EOS."""
    ids: list[int] = []
    labels: list[int] = []

    def add(text: str, labelled: bool) -> None:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if labelled else [-100] * len(piece))

    if not getattr(tokenizer, "chat_template", None):
        for m in messages:
            add(f"{m['role']}: ", False)
            add(m["content"], m["role"] == "assistant")
            if m["role"] == "assistant":
                ids.extend(_eos(tokenizer))
                labels.extend(_eos(tokenizer))
            add("\n", False)
        return ids, labels
    done = ""
    for i, m in enumerate(messages):
        steps = []
        if m["role"] == "assistant" and i > 0:
            steps.append((tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True), False))
        steps.append((tokenizer.apply_chat_template(messages[: i + 1], tokenize=False), m["role"] == "assistant"))
        for text, labelled in steps:
            if not text.startswith(done):
                raise ConfigError("model.data.train_dir", "the tokenizer's chat template renders a conversation "
                                  "differently from its prefix, so replies cannot be told from prompts")
            add(text[len(done):], labelled)
            done = text
    return ids, labels


def _packed(loaded: list[dict[str, Any]], tokenizer: Any, seq_len: int, directory: str | None) -> PackedDataset:
    ids: list[int] = []
    for row in loaded:
        ids.extend(tokenizer(row["text"], add_special_tokens=False)["input_ids"])
        ids.extend(_eos(tokenizer))
    dataset = PackedDataset(torch.tensor(ids, dtype=torch.int32), seq_len)
    if len(dataset) == 0:
        raise ConfigError("model.data.train_dir", f"{directory} holds fewer than {seq_len} tokens")
    return dataset
