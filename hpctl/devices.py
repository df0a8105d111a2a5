"""Processes and GPUs per node of a job: what every pre-flight check and launcher counts.

Whether the job wants GPUs is the trainer's rule (adapter.devices.wants_accelerators); this module
supplies what hpctl knows of a node at plan time and asks it. A local node is this machine (its
GPUs as nvidia-smi lists them, passed in as `host_gpus`); a Slurm, Kubernetes or SageMaker node is
what the cluster says: its instance type's GPUs, or Slurm's cluster.gpus_per_node, else not known.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapter.devices import accelerator_of, wants_accelerators
from adapter.numbers import positive_int
from hpctl import instances


def recipe_of(spec_data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The recipe: the `recipes` key of a resolved spec, or the document itself (as the adapter reads)."""
    recipe = spec_data.get("recipes")
    return recipe if isinstance(recipe, Mapping) else spec_data


def _cluster(spec_data: Mapping[str, Any]) -> Mapping[str, Any]:
    cluster = spec_data.get("cluster")
    return cluster if isinstance(cluster, Mapping) else {}  # not a mapping: the schema reports it


def is_local(spec_data: Mapping[str, Any]) -> bool:
    return _cluster(spec_data).get("type", spec_data.get("cluster_type")) == "local"


def devices_per_node(spec_data: Mapping[str, Any]) -> int:
    """Processes per node: a local cluster's nproc_per_node when set, else trainer.devices."""
    trainer = recipe_of(spec_data).get("trainer") or {}
    nproc = positive_int(_cluster(spec_data).get("nproc_per_node")) if is_local(spec_data) else None
    return nproc or positive_int(trainer.get("devices") if isinstance(trainer, Mapping) else None) or 1


def node_gpus(spec_data: Mapping[str, Any], host_gpus: int | None = None) -> int | None:
    """GPUs one node of the job has, as far as hpctl knows (None: the cluster does not say)."""
    if is_local(spec_data):
        return host_gpus
    name = spec_data.get("instance_type")
    instance = instances.lookup(name) if isinstance(name, str) else None
    if instance is not None:
        return instance.devices
    gpus = _cluster(spec_data).get("gpus_per_node")
    return gpus if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 0 else None


def uses_gpus(spec_data: Mapping[str, Any], host_gpus: int | None = None) -> bool:
    """Whether the job's processes run on GPUs (its launcher requests them, the checks count them)."""
    return wants_accelerators(accelerator_of(recipe_of(spec_data)), node_gpus(spec_data, host_gpus))
