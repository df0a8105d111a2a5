"""JSON row files and which rows train, torch-free.

Data files are JSON lines or one JSON array, optionally gzipped; a data path is a file or a
directory of such files (read in name order). The LLMFT translation counts rows before torch is
imported (its step count follows from the sample count), and the loaders read the same rows, so
both go through `train_val_indices` and agree on the split.
"""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

from adapter.reader import ConfigError

PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.json", "*.json.gz")


def files(path: str, key: str) -> list[Path]:
    """The data files at `path` (a file, or a directory of PATTERNS files); `key` names the field."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".parquet":
            raise ConfigError(key, f"{path}: Parquet is not read by this trainer", "convert it to JSON lines")
        return [p]
    found = sorted(f for pattern in PATTERNS for f in p.glob(pattern)) if p.is_dir() else []
    if not found:
        raise ConfigError(key, f"{path} is not a file and holds no {' / '.join(PATTERNS)} files")
    return found


def read(file: Path) -> list[dict[str, Any]]:
    """JSON lines, or one JSON array, optionally gzipped."""
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rt") as handle:
        text = handle.read()
    try:
        if text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ConfigError("data", f"{file} is not JSON lines or a JSON array: {exc}") from None


def load(path: str, key: str) -> list[dict[str, Any]]:
    return [row for f in files(path, key) for row in read(f)]


def train_val_indices(count: int, limit: int | None, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, validation) row indices: the first `limit` rows, then, when `fraction` < 1, a
    seeded shuffle whose first floor(fraction x rows) train and the rest validate."""
    indices = list(range(min(count, limit) if limit is not None else count))
    if fraction >= 1.0:
        return indices, []
    random.Random(seed).shuffle(indices)
    cut = int(len(indices) * fraction)
    return sorted(indices[:cut]), sorted(indices[cut:])
