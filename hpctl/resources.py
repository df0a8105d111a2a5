"""Where the built-in schemas, templates, recipes, clusters and general config live.

In a source checkout or an editable install they sit at the repository root beside `hpctl/`;
an installed wheel carries them under `<prefix>/share/hpctl/` (setup.cfg's data_files).
"""
from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

KINDS = ("schemas", "templates", "recipes", "clusters")


@lru_cache(maxsize=None)
def builtin_root() -> Path:
    """The directory holding schemas/, templates/, recipes/, clusters/ and config.yaml."""
    here = Path(__file__).resolve().parent.parent
    for root in (here, Path(sys.prefix) / "share" / "hpctl"):
        if (root / "schemas").is_dir() and (root / "templates").is_dir():
            return root
    raise RuntimeError("hpctl's built-in data (schemas/, templates/) is missing from this installation")


def builtin(kind: str) -> Path:
    """The built-in directory of one kind (see KINDS)."""
    assert kind in KINDS, kind
    return builtin_root() / kind
