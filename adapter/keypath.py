"""Dotted key paths into a nested spec (`recipes.model.peft.rank`, list indices as numbers).

The one spelling of a leaf's address that hpctl (provenance, overrides, diffs, errors) and the
trainer (the secret rule, tracking parameters) share. Torch-free and dependency-free.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def iter_leaves(data: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (dotted path, value) for every scalar leaf; empty containers count as leaves."""
    if isinstance(data, dict) and data:
        for k, v in data.items():
            yield from iter_leaves(v, join(path, k))
    elif isinstance(data, list) and data:
        for i, v in enumerate(data):
            yield from iter_leaves(v, join(path, i))
    else:
        yield path, data


def get_path(data: Any, path: str, default: Any = None) -> Any:
    """Read a dotted path (list indices as numbers); `default` when any step is missing."""
    node = data
    for part in path.split(".") if path else []:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return default
    return node
