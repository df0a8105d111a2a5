"""The resolved job spec: plain data plus where every leaf came from.

The spec is the merged root that HyperPod's launcher sees: general-config keys at the top
(`base_results_dir`, `container`, `env_vars`, ...), the cluster config under `cluster`, and the
recipe under `recipes`. Plan shows it, apply records it, and the trainer reads exactly this. The rules about its keys
that the trainer shares (key paths, secrets, the digest) live in adapter/ (keypath, secret, digest).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapter.keypath import get_path
from adapter.secret import is_secret_path, redact, secrets_of
from hpctl.errors import Origin


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
        return is_secret_path(path, self.secret_paths)

    def provenance_json(self) -> dict[str, list[dict]]:
        return {k: [o.to_json() for o in v] for k, v in sorted(self.provenance.items())}
