"""Instance types: one owner for how an instance type is spelled.

HyperPod's general config writes `instance_type` as EC2 spells it (`p5.48xlarge`) or as SageMaker
does (`ml.p5.48xlarge`); both name the same machine. Everything that compares, looks up or sends
an instance type asks this module for the form it needs.
"""
from __future__ import annotations

SAGEMAKER_PREFIX = "ml."


def bare(instance_type: str) -> str:
    """The EC2 spelling: `ml.p5.48xlarge` and `p5.48xlarge` both give `p5.48xlarge`."""
    name = instance_type.strip()
    return name[len(SAGEMAKER_PREFIX):] if name.startswith(SAGEMAKER_PREFIX) else name


def sagemaker_name(instance_type: str) -> str:
    """The SageMaker API's spelling: `ml.` followed by the EC2 name."""
    return SAGEMAKER_PREFIX + bare(instance_type)
