"""Golden files: the rendered artifact of three recipes on each backend, byte for byte.

A change to a template or a backend shows up here as a readable diff. After an intended change,
regenerate them with:

    HPCTL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpctl.backends import get_backend
from hpctl.compose import compose
from hpctl.validate import validate
from hpctl.workspace import Workspace

GOLDEN = Path(__file__).parent / "golden"
RECIPES = ["tiny_llama", "llama3_1_8b_pretrain", "mixtral_8x7b_pretrain"]
# fixed inputs so the artifact depends on nothing of this machine
FIXED = ["base_results_dir=/results", "container=example.com/hpctl:1", "cluster.python=python3"]
EXT = {"local": "sh", "slurm": "sbatch", "k8s": "yaml", "sagemaker": "json"}
PER_CLUSTER = {"slurm": ["cluster.workdir=/opt/hpctl"],  # unset, it would be this checkout's path
               "sagemaker": ["cluster.role_arn=arn:aws:iam::123456789012:role/hpctl", "instance_type=p5.48xlarge",
                             "cluster.sm_jobs_config.output_path=s3://bucket/hpctl",
                             "cluster.sm_jobs_config.inputs.s3.train=s3://bucket/data/train"]}


@pytest.mark.parametrize("cluster", ["local", "slurm", "k8s", "sagemaker"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_rendered_artifact_matches_golden_file(tmp_path, recipe, cluster):
    spec = compose([recipe, *FIXED, *PER_CLUSTER.get(cluster, [])], cluster, Workspace(tmp_path))
    validate(spec)
    text = get_backend(spec.cluster_type).render(spec).text
    golden = GOLDEN / cluster / f"{recipe}.{EXT[cluster]}"
    if os.environ.get("HPCTL_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"missing {golden}; regenerate with HPCTL_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{golden} differs; if intended, regenerate with HPCTL_UPDATE_GOLDEN=1"
