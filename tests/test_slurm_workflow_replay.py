"""HyperPod's own Slurm workflow tests, replayed: their arguments give an hpctl plan or a reasoned refusal.

tests/slurm_workflow/test_recipe_slurm_workflow.py in aws/sagemaker-hyperpod-recipes (v1 branch) calls
main.py with no recipes= (config.yaml's default recipe), a registry image (not a .sqsh) and
`cluster.slurm_docker_cfg` values, then compares the Docker scripts HyperPod writes. What HyperPod's
launcher in ../shared does with the same arguments is in tests/golden/hyperpod_launcher/slurm_workflow.txt:
it takes its Docker path (launch_docker_container.sh with docker_args and post_launch_commands).
hpctl runs images with pyxis (hpctl/slurm_docker.py says why), so those two keys are refused at
their override, with pyxis's way; HyperPod's test sets no training data, which hpctl's trainer
refuses too. The Trainium variant is refused for its instance type.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from hpctl.compose import compose
from hpctl.errors import HpctlError
from hpctl.plan import verify
from hpctl.workspace import Workspace
from helpers.workspace import SHARED

V1 = Workspace(SHARED / "peer-recipes" / "hyperpod-v1")
GOLDEN = Path(__file__).parent / "golden" / "hyperpod_launcher" / "slurm_workflow.txt"
IMAGE = "container=test_account.dkr.ecr.test_region.amazonaws.com/test_repo:test_tag"
DOCKER = ["cluster.slurm_docker_cfg.docker_args=[test_docker_cmd]",
          "cluster.slurm_docker_cfg.post_launch_commands=[test_post_launch_cmd]"]


def _problems(args: list[str]) -> list:
    with pytest.raises(HpctlError) as e:
        verify(compose(args, workspace=V1))
    return e.value.problems


def test_recipe_slurm_workflow_arguments(tmp_path: Path) -> None:
    golden = GOLDEN.read_text()
    assert "launch_docker_container.sh" in golden and "test_docker_cmd \\" in golden  # HyperPod: Docker path
    args = ["instance_type=ml.p5.48xlarge", f"base_results_dir={tmp_path}", IMAGE,
            "cluster.slurm_create_submission_file_only=True", *DOCKER]
    by_key = {p.key: p for p in _problems(args)}
    assert set(by_key) == {"recipes.model.data.train_dir", "cluster.slurm_docker_cfg.docker_args",
                           "cluster.slurm_docker_cfg.post_launch_commands"}
    docker = by_key["cluster.slurm_docker_cfg.docker_args"]
    assert docker.origin.override == 5 and "HyperPod would run it with Docker on each node" in docker.message
    assert "cluster.container_mounts" in docker.hint
    assert by_key["cluster.slurm_docker_cfg.post_launch_commands"].origin.override == 6
    # Without the Docker keys and with the data HyperPod's test leaves out, the same call plans:
    # the default recipe, pyxis pulling the registry image.
    spec = compose(args[:4] + ["recipes.model.data.train_dir=/fsx/train"], workspace=V1)
    _, artifact = verify(spec)
    assert spec.recipe_name == "training/llama/hf_llama3_8b_seq16k_gpu_p5x16_pretrain"
    assert "--container-image=test_account.dkr.ecr.test_region.amazonaws.com/test_repo:test_tag" in artifact.text


def test_recipe_slurm_trn_workflow_arguments(tmp_path: Path) -> None:
    args = ["instance_type=trn1.32xlarge", "recipes=training/llama/hf_llama3_8b_seq8k_trn1x4_pretrain.yaml",
            f"base_results_dir={tmp_path}", IMAGE, "cluster.slurm_create_submission_file_only=True", *DOCKER,
            "recipes.run.name=hf-llama3-8b", "recipes.trainer.num_nodes=4", "recipes.data.train_dir=/fake_dataset",
            "recipes.model.model_config=/fake_dataset/config.json"]
    with pytest.raises(HpctlError) as e:
        compose(args, workspace=V1)
    [p] = e.value.problems
    assert p.message.startswith("unsupported recipe: Trainium")
