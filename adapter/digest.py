"""The identity of a spec: its canonical JSON text and that text's digest.

hpctl records the digest in state and plans; the trainer tags its tracking runs with the same
digest of the spec it reads, so a run links back to the state entry. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(data: Any) -> str:
    """Stable JSON text: sorted keys, no whitespace variance. Used for digests and saved plans."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(data: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(data).encode()).hexdigest()
