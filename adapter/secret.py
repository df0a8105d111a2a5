"""The secret rule: which spec keys hold secrets, how they are hidden, and how they reach a job.

One rule for both packages: hpctl redacts plans, state and artifacts with it and passes each secret
to the job in the variable `secret_env_name` names; the trainer redacts the parameters it sends to
MLflow / W&B with it and reads the W&B API key from that variable. Torch-free.
"""
from __future__ import annotations

import re
from typing import Any

from adapter.keypath import iter_leaves, join

# LLMFT's (OpenRLHF's) use_wandb holds the W&B API key, though its name says nothing of a secret.
LLMFT_WANDB = "training_config.training_args.use_wandb"
# A key is sensitive when its last segment ends in one of these words (hf_access_token, git.token,
# db_password) but not when the word is only part of another (max_new_tokens, add_special_tokens),
# or when it is LLMFT's W&B key.
SENSITIVE = re.compile(r"(^|[_/-])(token|password|passwd|secret|api[_-]?key|access[_-]?key|credentials?)$"
                       rf"|^{re.escape(LLMFT_WANDB.rsplit('.', 1)[1])}$", re.I)
REDACTED = "(sensitive)"


def is_sensitive(path: str) -> bool:
    """Whether a key path names a secret (its last component matches the sensitive words)."""
    last = path.rsplit(".", 1)[-1]
    return bool(SENSITIVE.search(last))


def is_secret_path(path: str, extra: frozenset[str] = frozenset()) -> bool:
    """Whether the leaf at `path` holds a secret: a sensitive key name, or a value taken from a
    sensitive environment variable (`extra`, recorded at interpolation) or inside one."""
    if is_sensitive(path):
        return True
    return any(path == p or path.startswith(p + ".") for p in extra)


def redact(data: Any, path: str = "", extra: frozenset[str] = frozenset()) -> Any:
    """A deep copy with every secret value replaced by REDACTED (see `is_secret_path`).

    The one redaction every output uses: plan text, JSON, markdown, saved plans, artifacts, state,
    and the parameters the trainer sends to experiment trackers.
    """
    if isinstance(data, dict):
        return {k: redact_at(join(path, k), v, extra) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_at(join(path, i), v, extra) for i, v in enumerate(data)]
    return data


def redact_at(path: str, value: Any, extra: frozenset[str] = frozenset()) -> Any:
    """The value at `path` as outputs show it: REDACTED for a secret scalar that holds something,
    else the value with the secrets inside it redacted (`hpctl explain KEY` shows one key this way)."""
    if is_secret_path(path, extra) and value not in (None, "") and not isinstance(value, (dict, list)):
        return REDACTED
    return redact(value, path, extra)


def secrets_of(data: Any, extra: frozenset[str] = frozenset()) -> dict[str, str]:
    """The secret leaves that carry a value: {key path: value}."""
    return {p: str(v) for p, v in iter_leaves(data) if is_secret_path(p, extra) and v not in (None, "")}


def secret_env_name(path: str) -> str:
    """The environment variable that carries the secret at a spec key path into a job.

    Every backend uses this one name (HPCTL_SECRET_GIT_TOKEN for git.token), so `Artifact.env`
    reads the same everywhere, and the trainer finds the W&B key there.
    """
    return "HPCTL_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", path).upper()
