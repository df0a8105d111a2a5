"""An on-disk cache of pure work (parsed YAML layers, schema verdicts), keyed by content digest.

`hpctl plan` in an edit loop parses the same cluster and config files and validates the same
specs again and again; a hit skips the work and the imports it needs (ruamel.yaml, jsonschema).
Entries are JSON files named by the SHA-256 of everything the result depends on, so a stale
entry can never match. The cache is only an accelerator: any entry that cannot be read or
parsed is ignored (and rewritten), any write that fails is skipped, and HPCTL_CACHE=off turns
it off. Where: $HPCTL_CACHE_DIR, else $XDG_CACHE_HOME/hpctl, else ~/.cache/hpctl.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

VERSION = "1"  # bump when an entry's meaning changes


def directory() -> Path | None:
    """The cache directory, or None when caching is off."""
    if os.environ.get("HPCTL_CACHE", "").lower() in ("off", "0", "false", "no"):
        return None
    explicit = os.environ.get("HPCTL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hpctl"


def key(kind: str, *parts: bytes | str) -> str:
    """The digest of a kind of work and everything its result depends on."""
    h = hashlib.sha256(f"{VERSION}\0{kind}".encode())
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def get(kind: str, digest: str) -> Any | None:
    """The stored value, or None when absent, unreadable or corrupt."""
    root = directory()
    if root is None:
        return None
    try:
        entry = json.loads((root / kind / f"{digest}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return entry.get("value") if isinstance(entry, dict) and entry.get("key") == digest else None


def put(kind: str, digest: str, value: Any) -> None:
    """Store a JSON-serialisable value; atomically (write then rename), and silently skipped on failure."""
    root = directory()
    if root is None:
        return
    folder = root / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": digest, "value": value}, f, separators=(",", ":"))
            os.replace(tmp, folder / f"{digest}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (OSError, TypeError, ValueError):
        return
