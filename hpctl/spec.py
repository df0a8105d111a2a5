"""The resolved job spec: plain data plus where every leaf came from.

The spec is the merged root that HyperPod's launcher sees: general-config keys at the top
(`base_results_dir`, `container`, `env_vars`, ...), the cluster config under `cluster`, and the
recipe under `recipes`. Plan shows it, apply records it, and the trainer reads exactly this.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hpctl.errors import Origin

# A key is sensitive when its last segment ends in one of these words (hf_access_token, git.token,
# db_password) but not when the word is only part of another (max_new_tokens, add_special_tokens).
# LLMFT's (OpenRLHF's) use_wandb holds the W&B API key.
SENSITIVE = re.compile(r"(^|[_/-])(token|password|passwd|secret|api[_-]?key|access[_-]?key|credentials?)$"
                       r"|^use_wandb$", re.I)
REDACTED = "(sensitive)"


def is_sensitive(path: str) -> bool:
    """Whether a key path names a secret (its last component matches the sensitive words)."""
    last = path.rsplit(".", 1)[-1]
    return bool(SENSITIVE.search(last))


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


def _secret_path(path: str, extra: frozenset[str]) -> bool:
    """Whether the leaf at `path` holds a secret: a sensitive key name, or a value taken from a
    sensitive environment variable (`extra`, recorded at interpolation) or inside one."""
    if is_sensitive(path):
        return True
    return any(path == p or path.startswith(p + ".") for p in extra)


def redact(data: Any, path: str = "", extra: frozenset[str] = frozenset()) -> Any:
    """A deep copy with every secret value replaced by REDACTED (see `_secret_path`).

    The one redaction every output uses: plan text, JSON, markdown, saved plans, artifacts, state.
    """
    if isinstance(data, dict):
        return {k: (REDACTED if _secret_path(join(path, k), extra) and v not in (None, "")
                    and not isinstance(v, (dict, list)) else redact(v, join(path, k), extra))
                for k, v in data.items()}
    if isinstance(data, list):
        return [REDACTED if _secret_path(join(path, i), extra) and v not in (None, "")
                and not isinstance(v, (dict, list)) else redact(v, join(path, i), extra) for i, v in enumerate(data)]
    return data


def secrets_of(data: Any, extra: frozenset[str] = frozenset()) -> dict[str, str]:
    """The secret leaves that carry a value: {key path: value}."""
    return {p: str(v) for p, v in iter_leaves(data) if _secret_path(p, extra) and v not in (None, "")}


def secret_env_name(path: str) -> str:
    """The environment variable that carries the secret at a spec key path into a job.

    Every backend uses this one name (HPCTL_SECRET_GIT_TOKEN for git.token), so `Artifact.env`
    reads the same everywhere.
    """
    return "HPCTL_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", path).upper()


def canonical_json(data: Any) -> str:
    """Stable JSON text: sorted keys, no whitespace variance. Used for digests and saved plans."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(data: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(data).encode()).hexdigest()


@dataclass
class Spec:
    """A resolved job spec with provenance.

    `provenance` maps a leaf's dotted path to its origin chain: the first origin is where the
    final text was written; for interpolated values the following origins are the values it
    referred to, in order.
    """

    data: dict[str, Any]
    provenance: dict[str, list[Origin]] = field(default_factory=dict)
    recipe_name: str = ""
    cluster_name: str = ""
    inputs: dict[str, str] = field(default_factory=dict)  # file path -> content digest
    secret_paths: frozenset[str] = frozenset()  # leaves valued from a sensitive environment variable
    notes: tuple[str, ...] = ()  # how HyperPod-form arguments were read (hpctl.hyperpod_args)

    def get(self, path: str, default: Any = None) -> Any:
        return get_path(self.data, path, default)

    def origin(self, path: str) -> Origin | None:
        """The origin of a path, or of its closest ancestor that has one."""
        while True:
            chain = self.provenance.get(path)
            if chain:
                return chain[0]
            if "." not in path:
                return None
            path = path.rsplit(".", 1)[0]

    @property
    def recipe(self) -> dict[str, Any]:
        return self.data.get("recipes") or {}

    @property
    def cluster(self) -> dict[str, Any]:
        return self.data.get("cluster") or {}

    @property
    def job_name(self) -> str:
        return str(self.get("recipes.run.name") or self.recipe_name.rsplit("/", 1)[-1])

    @property
    def cluster_type(self) -> str:
        return str(self.data.get("cluster_type") or self.cluster_name)

    def public_data(self) -> dict[str, Any]:
        """The spec with secrets redacted: what plans print, save and record."""
        return redact(self.data, extra=self.secret_paths)

    def secrets(self) -> dict[str, str]:
        """{key path: value} of every secret in the spec; jobs receive them by environment only."""
        return secrets_of(self.data, self.secret_paths)

    def is_secret(self, path: str) -> bool:
        return _secret_path(path, self.secret_paths)

    def provenance_json(self) -> dict[str, list[dict]]:
        return {k: [o.to_json() for o in v] for k, v in sorted(self.provenance.items())}
