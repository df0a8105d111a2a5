"""`hpctl recipes check` over SageMaker HyperPod's public recipe collections (v1 and v2 branches).

Every supported recipe (run.model_type hf or llm_finetuning_aws) must plan for HyperPod's own slurm
and k8s cluster files; every other recipe must be refused with a reason located in its file, never
crash and never pass. The collections live in ../shared (skipped with a reason when absent); the
exit codes and the table are also checked on a small checkout written per test.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
from pathlib import Path

import pytest

from hpctl.backends import get_backend
from hpctl.compose import compose
from hpctl.validate import validate
from hpctl.workspace import Workspace
from test_compat import LLMFT_RECIPE, NOVA_RECIPE
from tests.helpers.workspace import GENERAL_CONFIG, MINI_RECIPE, SHARED, write_files

IMAGE = "container=example.com/img:1"  # HyperPod's config.yaml has `container: null`; k8s needs an image
# A SageMaker job also needs a role and an S3 output path, keys only its cluster file has.
SM_JOBS = ("sm_jobs:+cluster.role_arn=arn:aws:iam::123456789012:role/hpctl",
           "sm_jobs:cluster.sm_jobs_config.output_path=s3://bucket/out")
SMALL_SM_JOBS = (*SM_JOBS, "sm_jobs:instance_type=ml.g5.12xlarge")  # the small checkout's config names none
PLANNED = {"slurm": True, "k8s": True, "sm_jobs": True}
NOT_PLANNED = {"slurm": False, "k8s": False, "sm_jobs": False}
# supported recipes: v1's 85 hf; v2's 86 LLMFT + 1 hf + 151 verl + 1 evaluation (lm-eval)
COLLECTIONS = {"hyperpod-v1": 85, "hyperpod": 239}
REFUSAL_KINDS = {"nova", "mtrl", "checkpointless", "llm-judge", "trainium", "megatron", "elastic"}


def run_main(*argv: str) -> tuple[int, str]:
    """hpctl's entry point in-process: (exit code, stdout)."""
    from hpctl.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main(list(argv))
    return exc.value.code, out.getvalue()


def collection(name: str) -> Path:
    root = (SHARED / "peer-recipes" / name).resolve()
    if not (root / "config.yaml").is_file():
        pytest.skip(f"{root} is absent: the public HyperPod recipes ({name}) are needed for this test")
    return root


@functools.cache
def check(name: str) -> tuple[int, dict]:
    """(exit code, --json document) of one check over a whole collection; run once per session."""
    rc, out = run_main("recipes", "check", str(collection(name)), IMAGE, *SM_JOBS, "--json")
    return rc, json.loads(out)


@pytest.fixture(params=sorted(COLLECTIONS))
def report(request) -> tuple[str, int, dict]:
    return (request.param, *check(request.param))


def test_every_supported_recipe_plans_for_slurm_k8s_and_sm_jobs(report):
    name, rc, doc = report
    supported = [r for r in doc["recipes"] if r["supported"]]
    assert len(supported) == COLLECTIONS[name]
    not_planned = [(r["name"], r["reason"]) for r in supported if r["planned"] != PLANNED]
    assert not_planned == []
    assert all(r["parsed"] and r["valid"] for r in supported)
    # `ok` (and exit 0) also needs the trainer (or the engine) to accept every supported recipe, as `hpctl plan` does
    every_trainable = all(r["trainable"] for r in supported)
    assert (rc, doc["summary"]["ok"], doc["summary"]["planned"]) == (0 if every_trainable else 1, every_trainable,
                                                                    COLLECTIONS[name])


def test_every_other_recipe_is_refused_with_a_located_reason(report):
    _, _, doc = report
    others = [r for r in doc["recipes"] if not r["supported"]]
    assert others
    for r in others:
        assert r["parsed"] and not r["valid"] and r["planned"] == NOT_PLANNED, r
        assert r["kind"] in REFUSAL_KINDS and r["reason"], r
        assert r["location"].startswith(f"recipes/{r['name']}.yaml:"), r
    assert doc["summary"]["refused"] == len(others)
    assert sum(doc["summary"]["refused_by_kind"].values()) == len(others)


def test_the_v2_collection_holds_86_llmft_recipes_and_they_plan():
    _, doc = check("hyperpod")
    llmft = [r for r in doc["recipes"] if r["model_type"] == "llm_finetuning_aws"]
    assert len(llmft) == 86
    assert all(r["planned"] == PLANNED for r in llmft)
    assert {r["kind"] for r in doc["recipes"] if not r["supported"]} == {
        "nova", "mtrl", "checkpointless", "llm-judge"}


def test_trainability_is_reported_for_planned_recipes(report):
    """Planned recipes say whether hpctl's trainer takes them, with the reason where not."""
    _, _, doc = report
    for r in doc["recipes"]:
        if r["supported"] and not r["trainable"]:
            assert r["kind"] == "trainer" and r["reason"].startswith("not runnable by hpctl's trainer: recipes."), r
            assert r["location"].startswith(f"recipes/{r['name']}.yaml:"), r
        if r["trainable"]:
            assert r["family"] and r["reason"] is None, r
    assert doc["summary"]["trainable"] == sum(r["trainable"] for r in doc["recipes"])


# ------------------------------------------------------------ HyperPod v2 files, one by one
def test_v2_general_config_and_cluster_files_are_accepted():
    root = collection("hyperpod")
    recipe = "recipes=fine-tuning/qwen/llmft_qwen3_8b_seq4k_gpu_dpo"
    for cluster in ("slurm", "k8s"):
        validate(compose([recipe, f"cluster={cluster}", "base_results_dir=/tmp/r"], None, Workspace(root), env={}))


def test_an_llmft_plan_carries_nodes_devices_and_gpus():
    """LLMFT recipes name no accelerator: they are GPU recipes, and HyperPod v2's k8s cluster file
    asks for a HyperPodPyTorchJob."""
    root = collection("hyperpod")
    args = ["recipes=fine-tuning/llama/llmft_llama3_3_70b_instruct_seq4k_gpu_sft_lora", "base_results_dir=/tmp/r", IMAGE,
            "recipes.trainer.num_nodes=2"]
    slurm = compose([*args, "cluster=slurm"], None, Workspace(root), env={})
    text = get_backend("slurm").render(slurm).text
    assert "#SBATCH --nodes=2\n" in text and "#SBATCH --gpus-per-node=8\n" in text
    k8s = compose([*args, "cluster=k8s", "cluster.queue_name=team-a"], None, Workspace(root), env={})
    text = get_backend("k8s").render(k8s).text
    assert 'kind: "HyperPodPyTorchJob"' in text and "--nnodes=2" in text and "--nproc-per-node=8" in text
    assert '"nvidia.com/gpu": "8"' in text and '"kueue.x-k8s.io/queue-name": "team-a"' in text


# ------------------------------------------------------------ exit codes and the table, on a small checkout
SLURM_CLUSTER = "exclusive: true\n"
K8S_CLUSTER = "namespace: default\n"


def checkout(tmp_path: Path, recipes: dict[str, str]) -> Path:
    """A HyperPod-shaped checkout: config.yaml, cluster/{slurm,k8s}.yaml, recipes/."""
    write_files(tmp_path, {"config.yaml": GENERAL_CONFIG, "cluster/slurm.yaml": SLURM_CLUSTER,
                           "cluster/k8s.yaml": K8S_CLUSTER,
                           **{f"recipes/{name}.yaml": text for name, text in recipes.items()}})
    return tmp_path


def test_a_checkout_that_plans_exits_0_with_the_summary_line(tmp_path):
    root = checkout(tmp_path, {"tiny/mini": MINI_RECIPE, "ft/sft": LLMFT_RECIPE, "nova/sft": NOVA_RECIPE})
    rc, out = run_main("recipes", "check", str(root), IMAGE, *SMALL_SM_JOBS, "--no-color")
    assert rc == 0
    assert out.splitlines()[-1] == ("3 recipes: 2 supported, 2 planned for slurm, k8s and sm_jobs, 1 refused (nova 1); "
                                    "2 runnable by their program (hpctl's trainer or their engine)")
    _, doc = run_main("recipes", "check", str(root), IMAGE, *SMALL_SM_JOBS, "--json")
    summary = json.loads(doc)["summary"]
    assert summary["planned_by_cluster"] == {"slurm": 2, "k8s": 2, "sm_jobs": 2} and summary["not_planned_by_cluster"] == {}
    nova = next(line for line in out.splitlines() if "nova/sft" in line)
    assert "Nova recipes run only on" in nova
    assert not (root / "results").exists()  # planning writes nothing


def test_a_supported_recipe_that_does_not_plan_fails_the_check(tmp_path):
    broken = MINI_RECIPE.replace("  log_every_n_steps: 1\n", "  log_every_n_steps: often\n")
    line = MINI_RECIPE.splitlines().index("  log_every_n_steps: 1") + 1
    root = checkout(tmp_path, {"tiny/mini": MINI_RECIPE, "tiny/broken": broken, "bad/yaml": "run: [\n"})
    rc, out = run_main("recipes", "check", str(root), IMAGE, *SMALL_SM_JOBS, "--json")
    rows = {r["name"]: r for r in json.loads(out)["recipes"]}
    assert rc == 1
    assert rows["tiny/broken"]["kind"] == "invalid" and not rows["tiny/broken"]["valid"]
    assert rows["tiny/broken"]["reason"] == "slurm: recipes.trainer.log_every_n_steps: wrong type"
    assert rows["tiny/broken"]["location"] == f"recipes/tiny/broken.yaml:{line}:22"
    assert (rows["bad/yaml"]["parsed"], rows["bad/yaml"]["kind"]) == (False, "unreadable")
    assert rows["tiny/mini"]["planned"] == PLANNED


def test_without_an_image_the_k8s_plans_fail_and_say_why(tmp_path):
    root = checkout(tmp_path, {"tiny/mini": MINI_RECIPE})
    rc, out = run_main("recipes", "check", str(root), *SMALL_SM_JOBS, "--json")
    row = json.loads(out)["recipes"][0]
    assert rc == 1
    assert row["planned"] == {"slurm": True, "k8s": False, "sm_jobs": False}
    assert row["kind"] == "render" and "k8s: cluster.image: a Kubernetes job needs a container image" == row["reason"]


def test_without_a_role_the_sm_jobs_plans_fail_and_say_why(tmp_path):
    """A checkout without cluster/sm_jobs.yaml is checked with the built-in sagemaker cluster;
    `sm_jobs:`-prefixed overrides reach that cluster only (slurm and k8s have no such keys)."""
    root = checkout(tmp_path, {"tiny/mini": MINI_RECIPE})
    rc, out = run_main("recipes", "check", str(root), IMAGE, *SMALL_SM_JOBS[1:], "--json")
    row = json.loads(out)["recipes"][0]
    assert rc == 1
    assert row["planned"] == {"slurm": True, "k8s": True, "sm_jobs": False}
    assert row["kind"] == "render" and row["reason"] == "sm_jobs: cluster.role_arn: a SageMaker job needs an IAM role to run as"


def test_the_summary_gives_each_clusters_count_and_what_a_cluster_lacks(tmp_path):
    """Without SageMaker inputs, slurm and k8s plan every recipe and sm_jobs none: the summary says
    so per cluster, with the reason, rather than only "0 planned for slurm, k8s and sm_jobs"."""
    root = checkout(tmp_path, {"tiny/mini": MINI_RECIPE, "ft/sft": LLMFT_RECIPE, "nova/sft": NOVA_RECIPE})
    role = ("cluster.role_arn: a SageMaker job needs an IAM role to run as; cluster.sm_jobs_config.output_path: "
            "a SageMaker job needs an S3 output path; instance_type: a SageMaker job needs an instance type")
    rc, out = run_main("recipes", "check", str(root), IMAGE, "--json")
    summary = json.loads(out)["summary"]
    assert rc == 1 and (summary["planned"], summary["refused"], summary["refused_by_kind"]) == (0, 3, {"nova": 1, "render": 2})
    assert summary["planned_by_cluster"] == {"slurm": 2, "k8s": 2, "sm_jobs": 0}
    assert summary["not_planned_by_cluster"] == {"sm_jobs": {role: 2}}
    rc, out = run_main("recipes", "check", str(root), IMAGE, "--no-color")
    assert rc == 1 and out.splitlines()[-1] == (
        "3 recipes: 2 supported, planned: slurm 2, k8s 2, sm_jobs 0 (0 on every cluster; not planned on "
        f"sm_jobs: {role} (2 recipes)), 1 refused (nova 1); 2 runnable by their program (hpctl's trainer or their engine)")
    assert (summary["refused_nowhere_planned"], summary["refused_nowhere_planned_by_kind"]) == (1, {"nova": 1})
    rc, out = run_main("recipes", "check", str(root), "--json")  # no image either: k8s and sm_jobs lack one
    summary = json.loads(out)["summary"]
    assert summary["planned_by_cluster"] == {"slurm": 2, "k8s": 0, "sm_jobs": 0}
    assert list(summary["not_planned_by_cluster"]) == ["k8s", "sm_jobs"]
