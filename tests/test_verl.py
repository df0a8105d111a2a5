"""verl recipes (HyperPod's run.model_type: verl) at plan time and on Kubernetes.

Every one of HyperPod's 151 verl launcher scripts plans for k8s and sm_jobs with the arguments the
script itself passes (read from the file, tests/verl_inputs.py). A misspelt verl key and verl's
start-up rules are refused at the recipe's file:line; the RayJob validates against KubeRay's own CRD
(strict: an unknown field is an error) and its pods and ConfigMap against Kubernetes' schemas.
"""
from __future__ import annotations

import json
import shlex
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from hpctl.backends import kubernetes_ray
from hpctl.backends.base import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED
from hpctl.backends.kubernetes import BACKEND as K8S
from hpctl.backends.kubernetes import documents, job_state
from hpctl.compose import compose
from hpctl.engines import verl
from hpctl.errors import HpctlError
from hpctl.plan import verify
from hpctl.workspace import Workspace
from test_k8s_render import strict, validate_core, validate_pod_template
from verl_inputs import IMAGE, V2, as_hpctl, script_args, verl_scripts
from tests.helpers.workspace import SHARED

RAYJOB_CRD = SHARED / "k8s-schemas" / "kuberay" / "ray.io_rayjobs.yaml"
RLAIF = "fine-tuning/llama/verl-grpo-rlaif-llama-3-dot-2-1b-instruct-lora"
ARGS = ["base_results_dir=/fsx/results", f"container={IMAGE}", "recipes.run.name=verl-x",
        "++recipes.training_config.data.train_files=/fsx/data/train.parquet"]


def need_v2() -> None:
    if not (V2 / "config.yaml").is_file():
        pytest.skip(f"{V2} is absent: HyperPod's v2 recipes are needed for this test")


def plan_spec(recipe: str = RLAIF, *extra: str, cluster: str = "k8s", root: Path = V2):
    need_v2()
    return compose([f"recipes={recipe}", f"cluster={cluster}", f"cluster_type={cluster}", *ARGS, *extra],
                    None, Workspace(root), env={})


@pytest.mark.parametrize("cluster", ["k8s", "sm_jobs"])
def test_every_verl_launcher_script_plans(cluster):
    need_v2()
    scripts = verl_scripts()
    assert len(scripts) == 151
    ws, failed = Workspace(V2), {}
    for script in scripts:
        try:
            verify(compose(as_hpctl(script_args(script), cluster), None, ws, env={}))
        except HpctlError as e:
            failed[script.name] = [f"{p.key}: {p.message}" for p in e.problems]
    assert failed == {}


def test_the_verl_version_is_read_from_the_recipe():
    """HyperPod's rule: global_profiler (PPO) or engine (SFT/DPO) means verl 0.7; the rest are 0.5."""
    need_v2()
    found: dict[str, int] = {}
    for path in (V2 / "recipes").rglob("*.yaml"):
        recipe = yaml.safe_load(path.read_text())
        engine = verl.engine_of(recipe) if isinstance(recipe, dict) else None
        if engine:
            found[engine.version] = found.get(engine.version, 0) + 1
            assert (engine.version == "0.7") == ("0_7_0" in path.parent.name or "global_profiler" in path.read_text())
    assert found == {"0.5": 79, "0.7": 72}


def workspace_with(tmp_path: Path, recipe_text: str) -> Path:
    """A copy of HyperPod's v2 config and cluster files with one recipe, rl/x.yaml."""
    need_v2()
    shutil.copy(V2 / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(V2 / "cluster", tmp_path / "cluster")
    (tmp_path / "recipes" / "rl").mkdir(parents=True)
    (tmp_path / "recipes" / "rl" / "x.yaml").write_text(recipe_text)
    return tmp_path


def edited(old: str, new: str) -> tuple[str, int]:
    """HyperPod's RLAIF recipe with one line changed, and that line's number (1-based)."""
    text = (V2 / "recipes" / f"{RLAIF}.yaml").read_text()
    assert text.count(old) == 1
    return text.replace(old, new), text[:text.index(old)].count("\n") + 1


def refused(tmp_path: Path, text: str, *extra: str) -> list:
    with pytest.raises(HpctlError) as exc:
        verify(plan_spec("rl/x", *extra, root=workspace_with(tmp_path, text)))
    return exc.value.problems


def test_a_misspelt_verl_key_is_refused_at_its_line_with_a_suggestion(tmp_path):
    need_v2()
    text, line = edited("      ppo_mini_batch_size: 32\n", "      ppo_mini_batch_siz: 32\n")
    (p,) = refused(tmp_path, text)
    assert p.key == "recipes.training_config.actor_rollout_ref.actor.ppo_mini_batch_siz"
    assert (p.origin.file.endswith("recipes/rl/x.yaml"), p.origin.line) == (True, line)
    assert p.message == "unknown key 'ppo_mini_batch_siz'" and "ppo_mini_batch_size" in p.hint


def test_a_key_only_the_other_verl_version_has_is_refused(tmp_path):
    """verl 0.5 has no global_profiler-era `rollout.agent.default_agent_loop`: the 0.5 key set refuses it."""
    need_v2()
    text, line = edited("        num_workers: 8\n", "        num_workers: 8\n        default_agent_loop: x\n")
    (p,) = refused(tmp_path, text)
    assert (p.key.rsplit(".", 1)[-1], p.origin.line) == ("default_agent_loop", line + 1)


def test_a_mini_batch_that_does_not_divide_is_refused_at_its_line(tmp_path):
    """With dynamic batches off, each GPU's share of ppo_mini_batch_size x rollout.n (30 x 8 / 8 = 30)
    must divide by ppo_micro_batch_size_per_gpu (4): verl's FSDP workers assert it at start."""
    need_v2()
    text, line = edited("      ppo_mini_batch_size: 32\n", "      ppo_mini_batch_size: 30\n")
    text = text.replace("      use_dynamic_bsz: true\n", "      use_dynamic_bsz: false\n", 1)
    text = text.replace("      ppo_micro_batch_size_per_gpu: 2\n", "      ppo_micro_batch_size_per_gpu: 4\n")
    (p,) = refused(tmp_path, text)
    assert p.key == "recipes.training_config.actor_rollout_ref.actor.ppo_mini_batch_size"
    assert p.origin.line == line and "not divisible by ppo_micro_batch_size_per_gpu 4" in p.message


@pytest.mark.parametrize("overrides, key, words", [
    (["recipes.training_config.data.train_batch_size=127", "recipes.training_config.actor_rollout_ref.rollout.n=3",
      "recipes.training_config.actor_rollout_ref.actor.use_dynamic_bsz=false"],
     "data.train_batch_size", "381 responses per step is not divisible by 8"),
    (["recipes.training_config.actor_rollout_ref.rollout.tensor_model_parallel_size=3"],
     "actor_rollout_ref.rollout.tensor_model_parallel_size", "does not divide 8 GPUs"),
    (["recipes.training_config.actor_rollout_ref.actor.ulysses_sequence_parallel_size=3"],
     "actor_rollout_ref.actor.ulysses_sequence_parallel_size", "does not divide 8 GPUs"),
    (["recipes.training_config.actor_rollout_ref.actor.use_dynamic_bsz=false",
      "recipes.training_config.actor_rollout_ref.actor.ppo_micro_batch_size=8"],
     "actor_rollout_ref.actor.ppo_micro_batch_size", "both set"),
    (["recipes.training_config.data.train_files=null"], "data.train_files", "not set"),
])
def test_verl_start_up_rules_are_plan_errors(overrides, key, words):
    with pytest.raises(HpctlError) as exc:
        verify(plan_spec(RLAIF, *overrides))
    assert any(p.key == f"recipes.training_config.{key}" and words in p.message for p in exc.value.problems), \
        [(p.key, p.message) for p in exc.value.problems]


def test_the_summary_names_algorithm_reward_layout_and_memory():
    spec = plan_spec()
    s = verl.summary(spec, 80.0)
    assert s["engine"] == {"name": "verl 0.5", "algorithm": "GRPO",
                           "reward": "judge bedrock/openai.gpt-oss-120b-1:0 (llmj)",
                           "layout": "actor fsdp2 over 1 x 8 GPUs, ref param-offloaded, rollout vllm TP 1 "
                                     "(8 engines), n=8 (colocated)"}
    # 1B LoRA: bf16 base 2 GB / 8 shards + rollout 0.6 x 80 GB + 2 GB overhead
    assert s["memory_gb_per_device"] == pytest.approx(0.25 + 48 + 2)
    assert s["parameters"] == 1_000_000_000 and s["peft"] == "lora rank 32"


def test_a_layout_that_cannot_fit_is_an_error_and_near_the_limit_a_warning():
    """Device memory the user states (not taken from the instance catalogue) makes it an error."""
    with pytest.raises(HpctlError) as exc:
        verify(plan_spec(RLAIF, "++cluster.device_memory_gb=40",
                         "recipes.training_config.actor_rollout_ref.rollout.gpu_memory_utilization=0.99"))
    (p,) = exc.value.problems
    assert p.key.endswith("rollout.gpu_memory_utilization") and "do not fit one GPU" in p.message
    results, _ = verify(plan_spec(RLAIF, "recipes.training_config.actor_rollout_ref.rollout.gpu_memory_utilization=0.9"))
    assert [c.severity for c in results if c.id == "memory"] == ["warning"]


def test_the_slurm_plan_starts_ray_head_and_workers_with_their_ports():
    """Ray's Slurm pattern: the head on the first node, a worker step on each other node, every port
    in the plan (node i: ray_port + 100 i ...), verl's entry point on the head."""
    from hpctl.backends.slurm import BACKEND as SLURM
    text = SLURM.render(plan_spec(RLAIF, "container=null", "+cluster.ray_port=22800", "recipes.trainer.num_nodes=2",
                                  "recipes.training_config.trainer.nnodes=2", cluster="slurm")).text
    assert "#SBATCH --nodes=2\n" in text and "#SBATCH --gpus-per-node=8\n" in text
    assert '-w "$HPCTL_HEAD_NODE" "${hpctl_ray[@]}" --head --node-ip-address="$HPCTL_HEAD_ADDR" --port=22800' in text
    assert "--node-manager-port=22801" in text and "--max-worker-port=22899" in text
    assert '-w "${hpctl_nodes[1]}" "${hpctl_ray[@]}" --address="$RAY_ADDRESS" --node-manager-port=22901' in text
    assert ('-w "$HPCTL_HEAD_NODE" python3 -u -m verl.trainer.main_ppo --config-path "$HPCTL_VERL_DIR" '
            "--config-name verl_config") in text
    assert "--num-gpus=8" in text and "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES" not in text  # verl 0.5


def test_every_ray_step_runs_in_the_container_as_the_training_step_does():
    """The Ray steps take the pyxis options the training step takes (slurm.container_args): image,
    mounts and workdir, so verl starts in the same directory inside the container as outside it."""
    from hpctl.backends.slurm import BACKEND as SLURM, container_args
    spec = plan_spec(RLAIF, "+cluster.workdir=/fsx/code", cluster="slurm")
    text = SLURM.render(spec).text
    step = next(line for line in text.splitlines() if line.startswith("hpctl_step=("))
    words = shlex.split(step.removeprefix("hpctl_step=(").removesuffix(")"))
    options = container_args(spec, "/fsx/results/verl-x", "/fsx/code")
    assert options == [f"--container-image={IMAGE}", "--container-mounts=/fsx/results/verl-x:/fsx/results/verl-x,"
                       "/fsx/code:/fsx/code", "--container-workdir=/fsx/code"]
    assert words[-3:] == options


def test_a_ray_port_range_that_does_not_fit_is_refused():
    with pytest.raises(HpctlError) as exc:
        verify(plan_spec(RLAIF, "container=null", "+cluster.ray_port=65500", cluster="slurm"))
    assert [p.key for p in exc.value.problems] == ["cluster.ray_port"]


# ------------------------------------------------------------ Kubernetes: RayJob + ConfigMap

@lru_cache(maxsize=1)
def rayjob_validator() -> jsonschema.Draft7Validator:
    crd = yaml.load(RAYJOB_CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def crd_errors(job: dict[str, Any]) -> list[str]:
    if not RAYJOB_CRD.is_file():
        pytest.skip(f"KubeRay's CRD is not at {RAYJOB_CRD}")
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in rayjob_validator().iter_errors(job)]


def rendered(*extra: str, recipe: str = RLAIF) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    artifact = K8S.render(plan_spec(recipe, *extra))
    config_map, job = documents(artifact.text)
    return artifact, config_map, job


def test_the_rayjob_validates_against_kuberays_crd_and_its_pods_against_kubernetes():
    _, config_map, job = rendered("cluster.persistent_volume_claims=[{claimName: fsx-claim, mountPath: /fsx}]",
                                  "+cluster.custom_labels={team: rl}", "+env_vars.WANDB_MODE=offline")
    assert job["kind"] == "RayJob" and crd_errors(job) == []
    validate_core(config_map)
    cluster = job["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"]),
                 job["spec"]["submitterPodTemplate"]]
    for template in templates:
        validate_pod_template(template)
        assert template["metadata"]["labels"]["team"] == "rl"
    worker = cluster["workerGroupSpecs"][0]
    assert worker["replicas"] == 1
    assert worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    mounts = {m["mountPath"] for m in worker["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert "/fsx" in mounts


def test_strict_crd_validation_can_fail():
    _, _, job = rendered()
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicaz"] = 1
    assert any("replicaz" in e for e in crd_errors(job))


def test_the_configmap_carries_the_verl_config_intact_and_the_entrypoint_reads_it():
    spec = plan_spec()
    _, config_map, job = rendered()
    config = yaml.safe_load(config_map["data"][verl.CONFIG_FILE])
    assert config == spec.get("recipes.training_config")
    assert json.loads(config_map["data"]["job_spec.json"])["recipes"]["run"]["name"] == "verl-x"
    assert job["spec"]["entrypoint"] == ("python -u -m verl.trainer.main_ppo --config-path /config "
                                         "--config-name verl_config")
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    assert head["containers"][0]["volumeMounts"][0]["mountPath"] == "/config"


def test_verl_07_sees_every_gpu_of_its_node():
    _, _, job = rendered(recipe="fine-tuning/qwen-0_7_0/verl-grpo-rlvr-qwen-3-dot-5-4b-lora")
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"


def test_a_judges_secret_reaches_verl_by_reference_only():
    secret = "sk-judge-0123456789abcdef"
    artifact, config_map, job = rendered(f"+recipes.training_config.reward_model.reward_kwargs.kwargs.api_key={secret}")
    assert secret not in artifact.text
    config = yaml.safe_load(config_map["data"][verl.CONFIG_FILE])
    var = "HPCTL_SECRET_RECIPES_TRAINING_CONFIG_REWARD_MODEL_REWARD_KWARGS_KWARGS_API_KEY"
    assert config["reward_model"]["reward_kwargs"]["kwargs"]["api_key"] == "${oc.env:" + var + "}"
    assert artifact.env == {var: "recipes.training_config.reward_model.reward_kwargs.kwargs.api_key"}
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    (ref,) = [e for e in head["env"] if e["name"] == var]
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "verl-x-secrets", "key": var}


@pytest.mark.parametrize("status, state", [
    ({}, PENDING),
    ({"jobDeploymentStatus": "Initializing"}, PENDING),
    ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, RUNNING),
    ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, RUNNING),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, SUCCEEDED),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "FAILED"}, FAILED),
    ({"jobDeploymentStatus": "Failed", "jobStatus": "RUNNING", "message": "pods failed"}, FAILED),
    ({"jobDeploymentStatus": "ValidationFailed"}, FAILED),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, CANCELLED),
    ({"jobDeploymentStatus": "Suspended"}, PENDING),
])
def test_status_reads_job_status_and_job_deployment_status(status, state):
    found = job_state({"kind": "RayJob", "status": status})
    assert found.state == state
    if status.get("message"):
        assert found.detail == status["message"]


def test_logs_pick_the_submitter_then_head_then_workers():
    pods = [{"metadata": {"name": n, "labels": {"app": "j", "ray-role": r}}}
            for n, r in [("j-raycluster-worker-b", "worker"), ("j-abcde", "submitter"),
                         ("j-raycluster-head", "head"), ("j-raycluster-worker-a", "worker")]]
    assert kubernetes_ray.pod_for(pods, None) == ("j-abcde", "ray-job-submitter")
    assert kubernetes_ray.pod_for(pods, 0) == ("j-raycluster-head", "ray-head")
    assert kubernetes_ray.pod_for(pods, 2) == ("j-raycluster-worker-b", "ray-worker")
    assert kubernetes_ray.pod_for(pods, 3) == (None, "ray-worker")


# ------------------------------------------------------------ against HyperPod's own chart values
GOLDEN = Path(__file__).resolve().parent / "golden" / "verl"


@pytest.mark.parametrize("recipe", ["fine-tuning/llama/verl-grpo-rlaif-llama-3-dot-2-1b-instruct-lora",
                                    "fine-tuning/qwen-0_7_0/verl-grpo-rlvr-qwen-3-dot-5-4b-lora"])
def test_the_rayjob_carries_what_hyperpods_chart_carries(recipe):
    """HyperPod's launcher wrote values.yaml and verl_config.yaml for the same recipe and arguments
    (tests/golden/verl/README.md); hpctl's manifest carries the same image, resources, replicas,
    environment, instance types, TTL and verl config."""
    golden = GOLDEN / recipe.rsplit("/", 1)[-1]
    values = yaml.safe_load((golden / "values.yaml").read_text())
    hp_config = yaml.safe_load((golden / "verl_config.yaml").read_text())
    _, config_map, job = rendered("container=example.com/verl:1", recipe=recipe)
    assert yaml.safe_load(config_map["data"][verl.CONFIG_FILE]) == hp_config
    tc, ray = values["trainingConfig"], values["rayCluster"]
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    group = cluster["workerGroupSpecs"][0]
    worker = group["template"]["spec"]
    for pod in (head, worker):
        container = pod["containers"][0]
        assert (container["image"], container["imagePullPolicy"]) == (values["image"]["trainingImage"],
                                                                       values["image"]["pullPolicy"])
        assert pod["serviceAccountName"] == tc["serviceAccountName"]
        assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": tc["workerInstanceType"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env.get(k) for k in tc["envVars"] if k != "SLURM_NTASKS_PER_NODE"} == \
            {k: str(v) for k, v in tc["envVars"].items() if k != "SLURM_NTASKS_PER_NODE"}
    for pod, node in ((head, ray["headNode"]), (worker, ray["workerNodes"])):
        requests = pod["containers"][0]["resources"]["requests"]
        assert (requests["cpu"], requests["memory"], requests.get("nvidia.com/gpu", "0")) == \
            (node["cpu"], node["memory"], node["gpu"])
    assert group["replicas"] == int(ray["workerNodes"]["replicas"])
    assert {e["name"]: e["value"] for e in head["containers"][0]["env"] if e["name"] == "TRAIN_FILES"} == \
        {"TRAIN_FILES": tc["trainDir"]}
    assert cluster["rayVersion"] == ray["rayVersion"]
    assert job["spec"]["ttlSecondsAfterFinished"] == values["gc"]["ttlSecondsAfterFinished"]
    assert job["spec"]["shutdownAfterJobFinishes"] is values["gc"]["shutdownAfterJobFinishes"]
    submitter = job["spec"]["submitterPodTemplate"]["spec"]
    terms = submitter["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["preference"]["matchExpressions"][0]["values"] == tc["cpuInstanceTypes"]
    resources = submitter["containers"][0]["resources"]
    sub = ray["jobSubmitter"]
    assert resources == {"requests": {"cpu": sub["cpu"], "memory": sub["memory"]},
                         "limits": {"cpu": sub["cpuLimit"], "memory": sub["memoryLimit"]}}


# ------------------------------------------------------------ SageMaker training jobs
SM = ["+cluster.role_arn=arn:aws:iam::123456789012:role/hpctl", "cluster.sm_jobs_config.output_path=s3://bucket/out"]


def test_the_sagemaker_request_is_the_sdks_recipe_request():
    """As the SageMaker SDK's recipe support sends it for run.model_type verl: the resolved recipe as
    recipe.yaml in the `recipe` channel, its path as sagemaker_recipe_local_path, the image's own
    entry point; botocore's model accepts it (render checks)."""
    from hpctl.backends.sagemaker import BACKEND as SAGEMAKER
    spec = plan_spec(RLAIF, *SM, cluster="sm_jobs")
    artifact = SAGEMAKER.render(spec)
    request = json.loads(artifact.text)
    assert request["AlgorithmSpecification"] == {"TrainingImage": IMAGE, "TrainingInputMode": "File"}
    assert request["HyperParameters"] == {"sagemaker_recipe_local_path": "/opt/ml/input/data/recipe/recipe.yaml"}
    (channel,) = request["InputDataConfig"]
    assert channel["ChannelName"] == "recipe"
    (uri, text), = artifact.files.items()
    assert uri == channel["DataSource"]["S3DataSource"]["S3Uri"] + "recipe.yaml"
    assert yaml.safe_load(text) == spec.recipe
    assert request["ResourceConfig"] == {"InstanceCount": 1, "InstanceType": "ml.p5.48xlarge", "VolumeSizeInGB": 30}


def test_a_secret_in_the_verl_config_is_refused_on_sagemaker():
    """SageMaker keeps a job's environment in clear: the backend's secret rule refuses it at its key."""
    with pytest.raises(HpctlError) as exc:
        verify(plan_spec(RLAIF, *SM, "+recipes.training_config.reward_model.reward_kwargs.kwargs.api_key=sk-0123456789",
                         cluster="sm_jobs"))
    assert [p.key for p in exc.value.problems] == ["recipes.training_config.reward_model.reward_kwargs.kwargs.api_key"]


def test_node_counts_that_disagree_with_verls_are_warned_about():
    results, _ = verify(plan_spec(RLAIF, *SM, "recipes.trainer.num_nodes=2", cluster="sm_jobs"))
    (warning,) = [c for c in results if c.id == "engine-nodes"]
    assert warning.severity == "warning" and "SageMaker starts num_nodes instances" in warning.message


def test_hyperpods_worker_count_that_disagrees_with_verls_is_warned_about_on_kubernetes():
    """HyperPod's chart would start ray_cluster.worker_nodes.replicas GPU workers; hpctl starts the
    nodes verl asks Ray for, and says so."""
    results, artifact = verify(plan_spec(RLAIF, "recipes.ray_cluster.worker_nodes.replicas=2"))
    (warning,) = [c for c in results if c.id == "engine-nodes"]
    assert "replicas is 2" in warning.message and "hpctl starts 1" in warning.message
    _, job = documents(artifact.text)
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 1
