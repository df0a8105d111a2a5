"""Deep-merge layers in order (general < cluster < recipe), keeping provenance.

Mappings merge key by key; lists and scalars from a later layer replace earlier ones whole, as in
OmegaConf. A layer can be mounted under a key (`cluster`, `recipes`), as HyperPod's Hydra
defaults list does.
"""
from __future__ import annotations

import copy
from typing import Any

from adapter.keypath import join
from hpctl.errors import Origin
from hpctl.loader import Layer


def merge(layers: list[tuple[str, Layer]]) -> tuple[dict[str, Any], dict[str, Origin]]:
    """Merge (mount, layer) pairs in order; mount "" merges at the root."""
    data: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for mount, layer in layers:
        src: Any = layer.data
        src_origins = {join(mount, p): o for p, o in layer.origins.items()}
        if mount:
            for part in reversed(mount.split(".")):
                src = {part: src}
        _merge_into(data, src, "", origins, src_origins)
    return data, origins


def _merge_into(dst: dict, src: dict, path: str, origins: dict[str, Origin], src_origins: dict[str, Origin]) -> None:
    for key, value in src.items():
        sub = join(path, key)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            if sub in src_origins:
                origins[sub] = src_origins[sub]
            _merge_into(dst[key], value, sub, origins, src_origins)
            continue
        for p in [p for p in origins if p == sub or p.startswith(sub + ".")]:
            del origins[p]
        dst[key] = copy.deepcopy(value)
        for p, o in src_origins.items():
            if p == sub or p.startswith(sub + "."):
                origins[p] = o
