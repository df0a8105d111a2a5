"""Where a SageMaker training container finds things, and which node it is (torch-free).

SageMaker starts one container per instance and writes, before the entry point runs:

- `/opt/ml/input/config/resourceconfig.json`: `{"current_host": "algo-2", "hosts": ["algo-1",
  "algo-2"], ...}`. The node rank is the current host's index in `hosts`; the first host runs
  torchrun's rendezvous (the hosts resolve each other by these names).
- `/opt/ml/input/data/<channel>/`: each input channel of the request (S3 or a file system).

and collects, from every instance:

- `/opt/ml/checkpoints/`: synced with the request's CheckpointConfig S3 URI while the job runs and
  restored into a retried or spot-interrupted job, so the trainer resumes from it.
- `/opt/ml/model/`: uploaded as the job's model artifact when the job ends (the HF export).
- `/opt/ml/output/data/`: uploaded as output.tar.gz (metrics, the job spec the trainer ran).

This module is the one owner of those paths: hpctl's SageMaker backend renders its request from
the constants here, and `adapter.sagemaker_launch` runs in the container with them. The root
`/opt/ml` can be moved with $HPCTL_SM_ROOT (tests run two "hosts" side by side, each with its own).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = "/opt/ml"
ROOT_ENV = "HPCTL_SM_ROOT"
RESOURCE_CONFIG = "input/config/resourceconfig.json"
CHANNELS = "input/data"
CHECKPOINTS = "checkpoints"
MODEL = "model"
OUTPUT_DATA = "output/data"
SPEC_CHANNEL = "hpctl"  # the input channel that carries the resolved job spec
SPEC_FILE = "job_spec.json"


def root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or ROOT)


def container_path(rel: str) -> str:
    """A path as the container sees it with the default root (what the request names)."""
    return f"{ROOT}/{rel}"


def channel_dir(name: str) -> Path:
    """Where SageMaker mounts or copies input channel `name`."""
    return root() / CHANNELS / name


def checkpoint_dir() -> Path:
    return root() / CHECKPOINTS


def model_dir() -> Path:
    return root() / MODEL


def output_data_dir() -> Path:
    return root() / OUTPUT_DATA


@dataclass(frozen=True)
class Node:
    """This instance's place in the job."""

    rank: int  # index of the current host in hosts
    nnodes: int
    master_addr: str  # the first host
    current_host: str


def node(path: Path | None = None) -> Node:
    """Read resourceconfig.json; a missing or malformed file is a ValueError naming it."""
    path = path or root() / RESOURCE_CONFIG
    try:
        config = json.loads(path.read_text())
        hosts, current = config["hosts"], config["current_host"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read SageMaker's resource config {path}: {exc}") from None
    if not isinstance(hosts, list) or not hosts or current not in hosts:
        raise ValueError(f"{path}: current_host {current!r} is not one of hosts {hosts!r}")
    return Node(rank=hosts.index(current), nnodes=len(hosts), master_addr=str(hosts[0]), current_host=str(current))
