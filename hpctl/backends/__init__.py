"""Backends: one module per scheduler behind the small `Backend` interface in `base`."""
from __future__ import annotations

import importlib

from hpctl.backends.base import Backend
from hpctl.errors import HpctlError
from hpctl.suggest import did_you_mean

# cluster_type -> module under hpctl.backends. Imported lazily so plan pulls in only what it uses.
# The keys are the spec schema's cluster_type enum (a test holds them equal).
MODULES = {"local": "local", "slurm": "slurm", "k8s": "kubernetes", "sm_jobs": "sagemaker"}


def get_backend(cluster_type: str) -> Backend:
    """The backend for a cluster type, or a clear error naming the known types."""
    mod = MODULES.get(cluster_type)
    if mod is None:
        raise HpctlError(
            f"unknown cluster type '{cluster_type}'",
            key="cluster_type",
            expected=", ".join(sorted(MODULES)),
            found=repr(cluster_type),
            hint=did_you_mean(cluster_type, MODULES),
        )
    return importlib.import_module(f"hpctl.backends.{mod}").BACKEND
