"""HyperPod v2's `scale_config`: per node count presets merged into the recipe.

A v2 recipe lists, under `scale_config`, settings keyed by node count (`4: {trainer: {num_nodes:
4}, training_config: {training_args: {learning_rate: ...}}}`). The entry whose key equals the
chosen `trainer.num_nodes` (as written, or as overridden on the command line) is deep-merged into
the recipe, as HyperPod's launcher does: mappings key by key, lists and scalars replaced whole.
Precedence is recipe < scale_config entry < command-line overrides. Every value it sets keeps the
file position of its line inside `scale_config`, marked "from scale_config for N nodes", so the
plan says where a value came from. A node count without an entry changes nothing.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from adapter.keypath import get_path, join
from hpctl.errors import Origin


def apply(data: dict[str, Any], origins: dict[str, Origin]) -> int | None:
    """Merge the entry for the recipe's node count into `data` in place; returns that node count
    when an entry was merged, else None."""
    table = get_path(data, "recipes.scale_config")
    nodes = get_path(data, "recipes.trainer.num_nodes")
    if not isinstance(table, dict) or isinstance(nodes, bool) or not isinstance(nodes, int):
        return None
    key = nodes if nodes in table else str(nodes) if str(nodes) in table else None
    entry = table.get(key) if key is not None else None
    if not isinstance(entry, dict):
        return None
    _merge(data["recipes"], entry, "recipes", f"recipes.scale_config.{key}", origins, nodes)
    return nodes


def _merge(dst: dict[str, Any], src: dict[str, Any], path: str, src_path: str, origins: dict[str, Origin],
           nodes: int) -> None:
    for name, value in src.items():
        sub, from_sub = join(path, name), join(src_path, name)
        if isinstance(value, dict) and isinstance(dst.get(name), dict):
            _merge(dst[name], value, sub, from_sub, origins, nodes)
            continue
        if _overridden(origins, sub):
            continue  # the command line wins over the preset
        dst[name] = copy.deepcopy(value)
        for p in [p for p in origins if p == sub or p.startswith(sub + ".")]:
            del origins[p]
        for p, origin in list(origins.items()):
            if p == from_sub or p.startswith(from_sub + "."):
                origins[sub + p[len(from_sub):]] = dataclasses.replace(origin, via=f"from scale_config for {nodes} nodes")


def _overridden(origins: dict[str, Origin], path: str) -> bool:
    return any(o.override is not None for p, o in origins.items() if p == path or p.startswith(path + "."))
