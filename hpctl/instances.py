"""Instance types: one owner for how an instance type is spelled and what a node of it holds.

HyperPod's general config writes `instance_type` as EC2 spells it (`p5.48xlarge`) or as SageMaker
does (`ml.p5.48xlarge`); both name the same machine. Everything that compares, looks up or sends
an instance type asks this module for the form it needs.

The catalogue says, per node: the accelerators, their memory, the EFA devices and whether
GPUDirect RDMA (the NIC reading GPU memory directly) applies. hpctl fills the cluster's
`devices_per_node`, `device_memory_gb` and `efa_per_node` from it, the backends set the EFA/NCCL
environment from it, and the pre-flight checks compare the job against it. The facts are AWS's
published specifications, cross-checked against the tables of HyperPod's launcher (efa.py,
accelerator_devices.py). Trainium and Inferentia types are known here only to be refused: hpctl's
trainer runs on NVIDIA GPUs and CPUs. Torch-free: plan imports it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from hpctl.errors import Origin

SAGEMAKER_PREFIX = "ml."


def bare(instance_type: str) -> str:
    """The EC2 spelling: `ml.p5.48xlarge` and `p5.48xlarge` both give `p5.48xlarge`."""
    name = instance_type.strip()
    return name[len(SAGEMAKER_PREFIX):] if name.startswith(SAGEMAKER_PREFIX) else name


def sagemaker_name(instance_type: str) -> str:
    """The SageMaker API's spelling: `ml.` followed by the EC2 name."""
    return SAGEMAKER_PREFIX + bare(instance_type)


@dataclass(frozen=True)
class Instance:
    """One node of an instance type."""

    name: str  # EC2 spelling
    accelerator: str  # the GPU model
    devices: int  # accelerators per node
    device_memory_gb: int  # memory of one accelerator, GB
    efa: int  # EFA network devices per node (0: no EFA)
    gpudirect_rdma: bool  # EFA reads and writes GPU memory directly

    def describe(self) -> str:
        net = f"{self.efa} EFA" + (" with GPUDirect RDMA" if self.gpudirect_rdma else "") if self.efa else "no EFA"
        return f"{self.name}: {self.devices} x {self.accelerator} {self.device_memory_gb} GB, {net}"


def _family(accelerator: str, memory_gb: int, sizes: dict[str, tuple[int, int]], rdma: bool,
            prefix: str) -> dict[str, Instance]:
    """{name: Instance} for one family: sizes maps the size suffix to (accelerators, EFA devices)."""
    return {f"{prefix}.{size}": Instance(f"{prefix}.{size}", accelerator, devices, memory_gb, efa, rdma)
            for size, (devices, efa) in sizes.items()}


# The g families share a layout: single-GPU sizes, 4 GPUs at 12x/24x, 8 at 48x; EFA from 8xlarge up.
_G_SIZES = {"xlarge": (1, 0), "2xlarge": (1, 0), "4xlarge": (1, 0), "8xlarge": (1, 1), "16xlarge": (1, 1),
            "12xlarge": (4, 1), "24xlarge": (4, 1), "48xlarge": (8, 1)}

CATALOGUE: dict[str, Instance] = {
    **_family("A100", 40, {"24xlarge": (8, 4)}, True, "p4d"),
    **_family("A100", 80, {"24xlarge": (8, 4)}, True, "p4de"),
    **_family("H100", 80, {"48xlarge": (8, 32)}, True, "p5"),
    **_family("H200", 141, {"48xlarge": (8, 32)}, True, "p5e"),
    **_family("H200", 141, {"48xlarge": (8, 16)}, True, "p5en"),
    **_family("B200", 180, {"48xlarge": (8, 8)}, True, "p6-b200"),
    **_family("A10G", 24, _G_SIZES, False, "g5"),
    **_family("L4", 24, _G_SIZES, False, "g6"),
    **_family("L4", 24, {"4xlarge": (1, 0), "8xlarge": (1, 1)}, False, "gr6"),  # g6 with more memory per vCPU
    **_family("L40S", 48, {**_G_SIZES, "24xlarge": (4, 2), "48xlarge": (8, 4)}, False, "g6e"),
}

# Families hpctl refuses, by the EC2 name's family prefix (any size, known or future).
TRAINIUM = ("Trainium (Neuron) training needs AWS's neuronx-distributed trainer and Neuron devices; "
            "hpctl trains on NVIDIA GPUs and CPUs")
REFUSED = (
    (re.compile(r"^trn\d"), "trainium", TRAINIUM),
    (re.compile(r"^inf\d"), "inferentia", "Inferentia instances are built for inference (Neuron devices); hpctl trains on "
                            "NVIDIA GPUs and CPUs"),
)
REFUSED_HINT = "choose a GPU instance type (e.g. p5.48xlarge) or leave instance_type unset"


def refusal(instance_type: str) -> tuple[str, str] | None:
    """(kind, why) hpctl cannot run on this instance type (Trainium, Inferentia), or None."""
    name = bare(instance_type.lower())
    return next(((kind, reason) for pattern, kind, reason in REFUSED if pattern.match(name)), None)


def lookup(instance_type: str) -> Instance | None:
    """The catalogue entry for either spelling, or None when the type is not in it."""
    return CATALOGUE.get(bare(instance_type.lower()))


# cluster key -> the Instance attribute that fills it
FILLS = {"devices_per_node": "devices", "device_memory_gb": "device_memory_gb", "efa_per_node": "efa"}
BUILTIN_PREFIX = "<builtin>/"  # hpctl.workspace.BUILTIN: values of the built-in cluster files are defaults


def fill_cluster(data: dict, chains: dict[str, list[Origin]]) -> None:
    """Fill the cluster's node facts from `instance_type`, in place, unless the user set them.

    A value counts as set when it is not null and comes from the user's own cluster file or an
    override; the built-in cluster files' values (p5.48xlarge's) are defaults the instance type
    replaces. Each filled value's provenance is the instance_type's position, marked "from instance
    type NAME". Unknown and refused types fill nothing: the pre-flight checks report them.
    """
    name = data.get("instance_type")
    instance = lookup(name) if isinstance(name, str) else None
    cluster = data.get("cluster")
    if instance is None or not isinstance(cluster, dict):
        return
    where = (chains.get("instance_type") or [Origin()])[0]
    for key, attr in FILLS.items():
        path = f"cluster.{key}"
        origin = (chains.get(path) or [Origin()])[0]
        user_set = cluster.get(key) is not None and (
            origin.override is not None or (origin.file is not None and not origin.file.startswith(BUILTIN_PREFIX)))
        if not user_set:
            cluster[key] = getattr(instance, attr)
            chains[path] = [replace(where, via=f"from instance type {instance.name}")]
