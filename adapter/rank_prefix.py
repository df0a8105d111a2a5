"""How torchrun marks each worker's output line with its global rank.

Every launcher of the trainer (hpctl's local, Slurm and Kubernetes scripts, and the SageMaker
container's adapter/sagemaker_launch.py) starts torchrun with TEE_ALL and `rank_prefix_env()`, so
that every node's log reads the same and `hpctl logs --rank N` can pick one rank's lines.
Owned here, by the trainer's package, because the SageMaker container runs without hpctl.
"""
from __future__ import annotations

RANK_PREFIX = "[rank{rank}]: "  # what torchrun writes before each worker line, per rank_prefix_env
PREFIX_VAR = "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"
TEE_ALL = "--tee=3"  # torchrun prefixes only the output it tees; 3 = stdout and stderr
# torch's own log lines start with "[rankN]:" too once the process group is up; the trainer sets this
# format (torch's TORCH_LOGS_FORMAT, read when torch loads) so that torchrun's prefix is the only one.
TORCH_LOGS_FORMAT = "%(levelname)s %(name)s: %(message)s"


def rank_prefix_env() -> dict[str, str]:
    """The variable that makes torchrun (launched with TEE_ALL) start each worker's line with
    RANK_PREFIX, so that hpctl's `rank_lines` can pick one rank out of a node's log (`hpctl logs
    --rank`). Torchrun fills in `${rank}` (string.Template) with the worker's global rank."""
    return {PREFIX_VAR: RANK_PREFIX.format(rank="${rank}")}
