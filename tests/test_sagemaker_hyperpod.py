"""HyperPod compatibility of the SageMaker path: the same arguments, the same recipe.

tests/fixtures/sagemaker/ holds the recipe.yaml and sm_jobs_config.yaml that HyperPod's own
launcher wrote for `cluster=sm_jobs cluster_type=sm_jobs` (its README explains how they were made).
With HyperPod's v1 checkout as the workspace and the same arguments, the recipe hpctl sends (the
job spec it uploads for the `hpctl` channel) must equal HyperPod's leaf by leaf, the random
run-name suffix aside, and the request must carry HyperPod's channels, output path and estimator
arguments. Also here: recipe_overrides merged into the recipe with their provenance.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ruamel.yaml import YAML

from adapter.keypath import iter_leaves
from hpctl.backends import get_backend
from hpctl.compose import compose
from hpctl.errors import Origin
from hpctl.workspace import Workspace

FIXTURES = Path(__file__).parent / "fixtures" / "sagemaker"
ARGS = ["recipes=training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain", "cluster=sm_jobs", "cluster_type=sm_jobs",
        "base_results_dir=/tmp/hpl-sm", "recipes.run.name=llama-8b", "recipes.exp_manager.exp_dir=/opt/ml/output",
        "container=123456789012.dkr.ecr.us-east-1.amazonaws.com/hpctl:1",
        "cluster.sm_jobs_config.output_path=s3://bucket/output",
        "cluster.sm_jobs_config.inputs.s3.train=s3://bucket/data/train",
        "cluster.sm_jobs_config.inputs.s3.val=s3://bucket/data/val",
        "recipes.model.data.train_dir=/opt/ml/input/data/train", "recipes.model.data.val_dir=/opt/ml/input/data/val"]
OVERRIDE = "cluster.sm_jobs_config.recipe_overrides={trainer: {max_steps: 7}, model: {optim: {lr: 0.5}}}"
ROLE = "+cluster.role_arn=arn:aws:iam::123456789012:role/hpctl"  # HyperPod asks the SDK for the role at run time


def _yaml(name: str):
    return YAML(typ="safe").load((FIXTURES / name).read_text())


def _render(root: Path, *extra: str):
    spec = compose([*ARGS, ROLE, *extra], None, Workspace(root), env={})
    artifact = get_backend(spec.cluster_type).render(spec)
    [sent] = artifact.files.values()
    return spec, json.loads(artifact.text), json.loads(sent)


def test_the_recipe_sent_equals_hyperpods_leaf_by_leaf(hyperpod_v1):
    reference = _yaml("hyperpod_v1_llama3_8b_recipe.yaml")
    suffixed = reference["run"]["name"]
    assert re.fullmatch(r"llama-8b-[a-z0-9]{5}", suffixed)
    expected = {path: value.replace(suffixed, "llama-8b") if isinstance(value, str) else value
                for path, value in iter_leaves(reference)}
    _, request, sent = _render(hyperpod_v1)
    found = dict(iter_leaves(sent["recipes"]))
    assert sorted(found) == sorted(expected)
    assert {p: found[p] for p in found if found[p] != expected[p]} == {}
    assert found["run.results_dir"] == "/tmp/hpl-sm/llama-8b" and found["model.data.train_dir"] == "/opt/ml/input/data/train"


def test_the_request_carries_hyperpods_job_settings(hyperpod_v1):
    config = _yaml("hyperpod_v1_llama3_8b_sm_jobs_config.yaml")
    _, request, _ = _render(hyperpod_v1)
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels.pop("hpctl").startswith(config["output_path"] + "/llama-8b-")
    assert channels == config["inputs"]["s3"]
    assert request["OutputDataConfig"] == {"S3OutputPath": config["output_path"]}
    kwargs = config["additional_estimator_kwargs"]
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": kwargs["max_run"]}
    assert request["RemoteDebugConfig"] == {"EnableRemoteDebug": kwargs["enable_remote_debug"]}
    assert request["ResourceConfig"]["InstanceType"] == "ml.p5.48xlarge"  # config.yaml's p5.48xlarge, in ml. form
    assert request["ResourceConfig"]["InstanceCount"] == 16 and "--nproc-per-node" in request["AlgorithmSpecification"]["ContainerArguments"]


def test_recipe_overrides_are_merged_after_interpolation_with_provenance(hyperpod_v1):
    """As HyperPod's launch.py merges them into the recipe it wrote: a value derived from the
    overridden one keeps the value it had (lr_decay_iters follows trainer.max_steps in the recipe)."""
    before, _, _ = _render(hyperpod_v1)
    spec, _, sent = _render(hyperpod_v1, OVERRIDE)
    assert sent["recipes"]["trainer"]["max_steps"] == spec.get("recipes.trainer.max_steps") == 7
    assert sent["recipes"]["model"]["optim"]["lr"] == 0.5
    assert sent["recipes"]["model"]["lr_decay_iters"] == before.get("recipes.model.lr_decay_iters")
    assert sent["recipes"]["trainer"]["devices"] == 8  # the rest of the section is kept
    origin = spec.origin("recipes.trainer.max_steps")
    assert origin.text == OVERRIDE and spec.origin("recipes.model.optim.lr") == origin
    assert spec.origin("recipes.trainer.devices") == before.origin("recipes.trainer.devices")  # the recipe's line


def test_recipe_overrides_from_a_cluster_file_point_at_its_lines(tiny_workspace):
    ws = tiny_workspace({"clusters/sm.yaml": "type: sm_jobs\nsm_jobs_config:\n  recipe_overrides:\n    trainer:\n"
                                             "      max_steps: 3\n"})
    spec = compose(["mini"], "sm", Workspace(ws), env={})
    assert spec.get("recipes.trainer.max_steps") == 3
    assert spec.origin("recipes.trainer.max_steps") == Origin("clusters/sm.yaml", 5, 18)
