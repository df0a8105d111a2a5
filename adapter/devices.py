"""Whether a job wants accelerators: the one rule every launcher, check and the trainer ask.

`trainer.accelerator` is gpu, cpu or auto (Lightning's names; unset means auto, in v1 and LLMFT
recipes alike). gpu always runs on GPUs and cpu never does. auto runs on the GPUs of the node it
lands on, and on its CPUs where the node has none:

- on a local cluster the node is this machine: its GPUs as nvidia-smi lists them, so a CPU-only
  host runs an auto job on CPU, as the trainer does when CUDA is absent;
- on Slurm, Kubernetes and SageMaker the node is what the cluster says: the instance type's GPUs,
  or Slurm's cluster.gpus_per_node (0: a CPU node). A cluster that does not say is taken to have
  GPUs, as hpctl's cluster files describe GPU nodes, and its scheduler is asked for them (sbatch
  --gpus-per-node, the pod's nvidia.com/gpu): without them the job would see none. Set
  trainer.accelerator cpu for a CPU cluster.

hpctl asks `wants_accelerators` with what it knows of a node at plan time (hpctl.devices); the
trainer asks it at start with the GPUs torch sees. Torch-free.
"""
from __future__ import annotations

from typing import Any, Mapping

from adapter.reader import Reader

KEY = "trainer.accelerator"
ACCELERATORS = ("gpu", "cpu", "auto")
DEFAULT_ACCELERATOR = "auto"


def read_accelerator(r: Reader) -> str:
    """The recipe's accelerator (lower case, the default when unset); a value outside ACCELERATORS
    is refused in `r` and read as the default."""
    accelerator = (r.str(KEY) or DEFAULT_ACCELERATOR).lower()
    if accelerator not in ACCELERATORS:
        r.refuse(KEY, f"{accelerator!r} is not supported", f"use one of {', '.join(ACCELERATORS)}")
        return DEFAULT_ACCELERATOR
    return accelerator


def accelerator_of(recipe: Mapping[str, Any]) -> str:
    """`read_accelerator` of a recipe, for callers that do not collect refusals (the plan reports them)."""
    return read_accelerator(Reader(recipe))


def wants_accelerators(accelerator: str, node_gpus: int | None) -> bool:
    """Whether the job's processes run on GPUs, given how many GPUs a node of the job has (None:
    not known). auto follows the node; see the module docstring."""
    if accelerator == "cpu":
        return False
    return accelerator == "gpu" or node_gpus is None or node_gpus > 0
