"""verl on SageMaker training jobs: the CreateTrainingJob request the SageMaker Python SDK sends.

HyperPod's sm_jobs path hands a verl recipe to the SDK's recipe support (sagemaker-train,
`sm_recipes/utils.py`), which treats `run.model_type: verl` like an LLMFT recipe: it saves the
resolved recipe as `recipe.yaml`, uploads it as the reserved input channel `recipe`, passes its
container path as the hyperparameter `sagemaker_recipe_local_path`, and sends no entry point of its
own: the verl image (HyperPod's `hyperpod-recipes:verl-*-smtj`) starts Ray and verl from the recipe.
The instance count is the recipe's trainer.num_nodes.

This module turns the request the SageMaker backend builds for hpctl's trainer into that one: the
same name, role, instances, output, checkpoints, environment, stopping condition and estimator
arguments, with the recipe channel in place of hpctl's spec channel. Secrets are refused by the
backend's own rule (SageMaker stores the environment in clear). Pure.
"""
from __future__ import annotations

import posixpath
from typing import Any

from adapter import sagemaker as container
from hpctl.engines import verl
from hpctl.spec import Spec

CHANNEL = "recipe"  # the SDK's SM_RECIPE
RECIPE_FILE = "recipe.yaml"  # the SDK's SM_RECIPE_YAML
RECIPE_PATH = f"/opt/ml/input/data/{CHANNEL}/{RECIPE_FILE}"  # the SDK's SM_RECIPE_CONTAINER_PATH
HYPERPARAMETER = "sagemaker_recipe_local_path"


def request(spec: Spec, base: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the request for a verl recipe, {S3 URI: content} that apply uploads first)."""
    out = {**base, "AlgorithmSpecification": {k: v for k, v in base["AlgorithmSpecification"].items()
                                               if k not in ("ContainerEntrypoint", "ContainerArguments")}}
    spec_channel, *channels = base["InputDataConfig"]
    assert spec_channel["ChannelName"] == container.SPEC_CHANNEL
    prefix = spec_channel["DataSource"]["S3DataSource"]["S3Uri"]
    recipe_prefix = posixpath.dirname(prefix.rstrip("/")) + f"/{CHANNEL}/"
    recipe_channel = {"ChannelName": CHANNEL, "InputMode": "File", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": recipe_prefix, "S3DataDistributionType": "FullyReplicated"}}}
    out["InputDataConfig"] = [*channels, recipe_channel]
    out["HyperParameters"] = {**base.get("HyperParameters", {}), HYPERPARAMETER: RECIPE_PATH}
    return out, {recipe_prefix + RECIPE_FILE: verl.recipe_text(spec)}
