"""The Kubernetes backend's manifest, checked against the schemas the cluster would apply.

The PyTorchJob document is validated with jsonschema against the Kubeflow training operator's
own CRD schema (release-1.9, in ../shared/k8s-schemas), tightened so an unknown field is an error
rather than silently pruned; ConfigMap, Secret and the pod templates are validated strictly with
kubernetes-validate's bundled Kubernetes 1.30 schemas. Everything runs offline and fast.
"""
from __future__ import annotations

import copy
import json
import string
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ruamel.yaml import YAML

from hpctl.backends.common import rank_lines
from hpctl.backends.kubernetes import BACKEND, secret_manifest
from hpctl.errors import HpctlError
from hpctl.spec import Spec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
CRD = SHARED / "k8s-schemas" / "kubeflow.org_pytorchjobs.yaml"
PEER = SHARED / "peer-recipes" / "hyperpod-v1"
K8S_VERSION = "1.30.0"

HOSTILE = ["x: y", "line1\nline2", "{{ evil }}", "{% if %}", "it's \"quoted\"", "$(id)", "$$(x) ${HOME} `id`",
           "- item", "#comment", "&anchor *alias !tag", "  spaced  ", "", "null", "true", "0x1F", "ünïcødé ✓"]


def make_spec(cluster: dict[str, Any] | None = None, nodes: int = 1, devices: int = 2,
              accelerator: str = "cpu", **top: Any) -> Spec:
    data = {
        "cluster_type": "k8s",
        "container": "registry.example/hpctl:1",
        "env_vars": {"NCCL_DEBUG": "WARN"},
        "cluster": {"type": "k8s", "namespace": "ml", **(cluster or {})},
        "recipes": {
            "run": {"name": "llama-8b", "results_dir": "/fsx/results/llama-8b"},
            "trainer": {"devices": devices, "num_nodes": nodes, "accelerator": accelerator, "max_steps": 10},
            "model": {"model_type": "llama_v3"},
        },
        **top,
    }
    return Spec(data=data, recipe_name="training/llama/llama-8b", cluster_name="k8s")


def parse(text: str) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all(text) if d is not None]


def render(spec: Spec) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    artifact = BACKEND.render(spec)
    config_map, job = parse(artifact.text)
    return artifact, config_map, job


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused, as `kubectl apply --validate=strict` would."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@lru_cache(maxsize=1)
def crd_validator() -> jsonschema.Draft7Validator:
    # PyYAML's C loader (a dependency of kubernetes-validate) reads the 600 KB CRD in 0.1 s.
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def crd_errors(job: dict[str, Any]) -> list[str]:
    if not CRD.is_file():
        pytest.skip(f"the PyTorchJob CRD is not at {CRD} (../shared is absent)")
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator().iter_errors(job)]


def validate_core(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def validate_pod_template(template: dict[str, Any]) -> None:
    validate_core({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t", "namespace": "ml"},
                   "template": template})


def validate_all(config_map: dict[str, Any], job: dict[str, Any]) -> None:
    validate_core(config_map)
    if job["kind"] == "PyTorchJob":
        assert crd_errors(job) == []
        templates = [r["template"] for r in job["spec"]["pytorchReplicaSpecs"].values()]
    else:
        templates = [r["template"] for r in job["spec"]["replicaSpecs"]]
    for template in templates:
        validate_pod_template(template)


def container(job: dict[str, Any], replica: str = "Master") -> dict[str, Any]:
    if job["kind"] == "PyTorchJob":
        return job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"][0]
    return job["spec"]["replicaSpecs"][0]["template"]["spec"]["containers"][0]


def pod_spec(job: dict[str, Any], replica: str = "Master") -> dict[str, Any]:
    return job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]


def unescape(value: str) -> str:
    """What Kubernetes makes of an env value or command item with no $(VAR) in it."""
    return value.replace("$$", "$")


def test_strict_crd_validation_can_fail():
    _, _, job = render(make_spec())
    broken = copy.deepcopy(job)
    broken["spec"]["pytorchReplicaSpecs"]["Master"]["replicaz"] = 1
    broken["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    errors = crd_errors(broken)
    assert any("replicaz" in e for e in errors) and any("'one' is not of type 'integer'" in e for e in errors)
    broken = copy.deepcopy(job)
    container(broken)["imagee"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagee"):
        validate_pod_template(broken["spec"]["pytorchReplicaSpecs"]["Master"]["template"])


def test_single_node_cpu_job():
    spec = make_spec(nodes=1, devices=2, accelerator="cpu")
    artifact, config_map, job = render(spec)
    validate_all(config_map, job)
    assert (artifact.kind, artifact.language, artifact.files, artifact.env) == ("manifest", "yaml", {}, {})
    assert artifact.results_dir == "/fsx/results/llama-8b"
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert job["metadata"] == {"name": "llama-8b", "namespace": "ml", "labels": {"app": "llama-8b"}}
    c = container(job)
    assert c["name"] == "pytorch" and c["image"] == "registry.example/hpctl:1"
    assert c["command"] == [
        "torchrun", "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "$(MASTER_ADDR):$(MASTER_PORT)", "--rdzv-id", "llama-8b", "--tee=3",
        "-m", "adapter.train", "--config", "/config/job_spec.json"]
    assert "resources" not in c  # a CPU job asks for no accelerators
    # HPCTL_JOB_ID: the job id `submit` returns (namespace/name), which the trainer's tracking tags name.
    assert c["env"] == [{"name": "HPCTL_JOB_ID", "value": "ml/llama-8b"}, {"name": "NCCL_DEBUG", "value": "WARN"},
                        {"name": "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE", "value": "[rank$${rank}]: "}]
    assert {"name": "job-spec", "mountPath": "/config", "readOnly": True} in c["volumeMounts"]
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert volumes["job-spec"]["configMap"]["name"] == config_map["metadata"]["name"] == "llama-8b-spec"
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    assert job["spec"]["pytorchReplicaSpecs"]["Master"]["restartPolicy"] == "Never"
    # The ConfigMap carries exactly the resolved (public) spec the trainer reads.
    assert json.loads(config_map["data"]["job_spec.json"]) == spec.public_data()


def test_four_node_gpu_job():
    spec = make_spec({"efa_per_node": 32, "shm_size": "64Gi", "python": "/opt/py/bin/python3"},
                     nodes=4, devices=8, accelerator="gpu")
    artifact, config_map, job = render(spec)
    validate_all(config_map, job)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 3}
    assert replicas["Master"]["template"] == replicas["Worker"]["template"]
    assert job["spec"]["nprocPerNode"] == "8"
    c = container(job, "Worker")
    assert c["resources"]["limits"] == c["resources"]["requests"] == {
        "nvidia.com/gpu": "8", "vpc.amazonaws.com/efa": "32"}
    assert c["command"][:3] == ["/opt/py/bin/python3", "-m", "torch.distributed.run"]
    assert c["command"][3:7] == ["--nnodes", "4", "--nproc-per-node", "8"]
    dshm = [v for v in pod_spec(job, "Worker")["volumes"] if v["name"] == "dshm"]
    assert dshm == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}}]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert artifact.logs == {"pods": "kubectl get pods -n ml -l app=llama-8b",
                             "node0": "kubectl logs -n ml llama-8b-master-0 -c pytorch"}


def test_scheduling_labels_annotations_affinity_and_volumes():
    cluster = {
        "queue": "team-a-queue", "custom_labels": {"team": "nlp", "example.com/cost-center": "42"},
        "annotations": {"example.com/owner": "alice", "note": 7}, "image": "other/image:2",
        "service_account_name": "trainer", "priority_class_name": "high-priority",
        "pullPolicy": "Always", "restartPolicy": "OnFailure", "cleanPodPolicy": "Running",
        "node_selector": {"node.kubernetes.io/instance-type": "ml.p5.48xlarge"},
        "label_selector": {
            "required": {"sagemaker.amazonaws.com/node-health-status": ["Schedulable"]},
            "preferred": {"sagemaker.amazonaws.com/deep-health-check-status": ["Passed"], "zone": ["a", "b"]},
            "weights": [100, 10]},
        "volumes": [{"volumeName": "data1", "hostPath": "/data", "mountPath": "/data"}, None],
        "persistent_volume_claims": [None, {"claimName": "fsx-claim", "mountPath": "/fsx"}],
    }
    _, config_map, job = render(make_spec(cluster, nodes=2, devices=8, accelerator="gpu"))
    validate_all(config_map, job)
    assert job["metadata"]["labels"] == {"app": "llama-8b", "example.com/cost-center": "42", "team": "nlp",
                                         "kueue.x-k8s.io/queue-name": "team-a-queue"}
    pod_labels = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["metadata"]["labels"]
    assert pod_labels == {"app": "llama-8b", "example.com/cost-center": "42", "team": "nlp"}  # no queue
    assert job["metadata"]["annotations"] == {"example.com/owner": "alice", "note": "7"}
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "Running"}
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicy"] == "OnFailure"
    pod = pod_spec(job, "Worker")
    assert pod["serviceAccountName"] == "trainer" and pod["priorityClassName"] == "high-priority"
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "ml.p5.48xlarge"}
    assert pod["affinity"]["nodeAffinity"] == {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "sagemaker.amazonaws.com/node-health-status", "operator": "In", "values": ["Schedulable"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": "sagemaker.amazonaws.com/deep-health-check-status", "operator": "In", "values": ["Passed"]}]}},
            {"weight": 10, "preference": {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a", "b"]}]}}]}
    c = pod["containers"][0]
    assert c["image"] == "other/image:2" and c["imagePullPolicy"] == "Always"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data1"] == {"name": "data1", "hostPath": {"path": "/data"}}
    assert volumes["pvc-1"] == {"name": "pvc-1", "persistentVolumeClaim": {"claimName": "fsx-claim"}}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"job-spec": "/config", "dshm": "/dev/shm", "data1": "/data", "pvc-1": "/fsx"}


def test_hyperpod_peer_cluster_config_and_recipe():
    """HyperPod's own cluster/k8s.yaml (PVC list `- null`) and a real recipe render valid objects."""
    cluster_file = PEER / "cluster" / "k8s.yaml"
    recipe_file = PEER / "recipes" / "training" / "llama" / "hf_llama3_8b_seq8k_gpu_p5x16_pretrain.yaml"
    if not (cluster_file.is_file() and recipe_file.is_file()):
        pytest.skip(f"HyperPod peer recipes are not at {PEER} (../shared is absent)")
    cluster = YAML(typ="safe").load(cluster_file.read_text())
    assert cluster["persistent_volume_claims"] == [None]
    recipe = YAML(typ="safe").load(recipe_file.read_text())
    spec = Spec(data={"cluster_type": "k8s", "container": "img:1", "cluster": cluster, "recipes": recipe},
                recipe_name="training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain", cluster_name="k8s")
    _, config_map, job = render(spec)
    validate_all(config_map, job)
    assert job["metadata"]["namespace"] == "default"
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 15
    assert [v["name"] for v in pod_spec(job)["volumes"]] == ["job-spec", "dshm"]
    assert container(job)["imagePullPolicy"] == "Always"


def test_builtin_k8s_cluster_config():
    """hpctl's own clusters/k8s.yaml, as shipped, renders valid objects once an image is set."""
    path = ROOT / "clusters" / "k8s.yaml"
    if not path.is_file():
        pytest.skip("clusters/k8s.yaml is not in this checkout yet")
    cluster = YAML(typ="safe").load(path.read_text())
    spec = make_spec({**cluster, "image": "img:1"}, nodes=2, devices=8, accelerator="gpu")
    _, config_map, job = render(spec)
    validate_all(config_map, job)
    assert container(job)["command"][0] == cluster["python"]


def test_auto_resume_annotations_and_restart_policy():
    spec = make_spec({"auto_resume": {"enabled": True, "max_restarts": 5}, "restartPolicy": "Never",
                      "annotations": {"example.com/x": "y"}}, nodes=2)
    _, config_map, job = render(spec)
    validate_all(config_map, job)
    assert job["metadata"]["annotations"] == {
        "example.com/x": "y",
        "sagemaker.amazonaws.com/enable-job-auto-resume": "true",
        "sagemaker.amazonaws.com/job-max-retry-count": "5"}
    # HyperPod auto-resume needs OnFailure; Never (the built-in default) would defeat it.
    assert {r["restartPolicy"] for r in job["spec"]["pytorchReplicaSpecs"].values()} == {"OnFailure"}
    _, _, off = render(make_spec({"auto_resume": {"enabled": False, "max_restarts": 5}}))
    assert "annotations" not in off["metadata"]


def test_hyperpod_pytorchjob_kind():
    spec = make_spec({"job_kind": "HyperPodPyTorchJob", "auto_resume": {"enabled": True, "max_restarts": 2},
                      "cleanPodPolicy": "None", "queue": "q1", "shm_size": "32Gi"},
                     nodes=3, devices=8, accelerator="gpu")
    artifact, config_map, job = render(spec)
    validate_core(config_map)
    assert (job["apiVersion"], job["kind"]) == ("sagemaker.amazonaws.com/v1", "HyperPodPyTorchJob")
    assert set(job) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(job["spec"]) == {"nprocPerNode", "replicaSpecs", "runPolicy"}
    assert job["spec"]["nprocPerNode"] == "8"
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "None", "jobMaxRetryCount": 2}
    (replica,) = job["spec"]["replicaSpecs"]
    assert set(replica) == {"name", "replicas", "template"}
    assert (replica["name"], replica["replicas"]) == ("pod", 3)
    validate_pod_template(replica["template"])
    assert replica["template"]["spec"]["restartPolicy"] == "OnFailure"
    c = container(job)
    assert c["command"] == ["hyperpodrun", "--nnodes=3", "--nproc-per-node=8", "--rdzv-backend=hyperpod",
                            "--tee=3", "-m", "adapter.train", "--config", "/config/job_spec.json"]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q1"
    assert job["metadata"]["annotations"]["sagemaker.amazonaws.com/enable-job-auto-resume"] == "true"
    assert artifact.logs == {"pods": "kubectl get pods -n ml -l app=llama-8b"}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_strings_round_trip_exactly(hostile):
    recipe_extra = {"exp_manager": {"name": hostile, "checkpoint_dir": hostile}}
    cluster = {
        "image": hostile or "img", "service_account_name": hostile, "priority_class_name": hostile,
        "annotations": {"example.com/note": hostile}, "env": {"HOSTILE": hostile},
        "volumes": [{"volumeName": "data", "hostPath": hostile or "/h", "mountPath": hostile or "/m"}],
        "persistent_volume_claims": [{"claimName": hostile or "c", "mountPath": "/fsx" + hostile}],
        "python": hostile or "python3",
    }
    spec = make_spec(cluster, env_vars={"HOSTILE_GENERAL": hostile})
    spec.data["recipes"].update(recipe_extra)
    _, config_map, job = render(spec)
    validate_all(config_map, job)
    assert json.loads(config_map["data"]["job_spec.json"]) == spec.public_data()
    pod = pod_spec(job)
    c = pod["containers"][0]
    assert c["image"] == (hostile or "img")
    assert pod.get("serviceAccountName", "") == hostile and pod.get("priorityClassName", "") == hostile
    assert job["metadata"]["annotations"] == {"example.com/note": hostile}
    env = {e["name"]: unescape(e["value"]) for e in c["env"]}
    assert env["HOSTILE"] == env["HOSTILE_GENERAL"] == hostile
    assert unescape(c["command"][0]) == (hostile or "python3")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["hostPath"]["path"] == (hostile or "/h")
    assert volumes["pvc-0"]["persistentVolumeClaim"]["claimName"] == (hostile or "c")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert (mounts["data"], mounts["pvc-0"]) == (hostile or "/m", "/fsx" + hostile)


def test_dollar_escaping_keeps_kubernetes_from_expanding_values():
    _, _, job = render(make_spec({"env": {"A": "$(id)", "B": "$$", "C": "a$b"}}))
    env = {e["name"]: e["value"] for e in container(job)["env"]}
    assert (env["A"], env["B"], env["C"]) == ("$$(id)", "$$$$", "a$$b")
    assert "$(MASTER_ADDR):$(MASTER_PORT)" in container(job)["command"]  # meant to be expanded


@pytest.mark.parametrize("kind", ["PyTorchJob", "HyperPodPyTorchJob"])
def test_pods_prefix_each_line_with_the_rank_that_logs_rank_picks(kind):
    """torchrun tees every worker's output through TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE (a
    string.Template); what it writes for rank 9 must be what `rank_lines` keeps for rank 9."""
    spec = make_spec({"job_kind": kind}, nodes=2, devices=8, accelerator="gpu",
                     env_vars={"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "[${role_name}]"})
    artifact, _, job = render(spec)
    c = container(job)
    assert "--tee=3" in c["command"][:c["command"].index("-m")]  # a launcher option, before the program
    (var,) = [e for e in c["env"] if e["name"] == "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"]
    template = string.Template(unescape(var["value"]))
    pod_log = [template.safe_substitute(role_name="default", rank=r, local_rank=r % 8) + f"line of {r}"
               for r in (8, 9, 19)]
    assert list(rank_lines(pod_log, 9)) == ["line of 9"]
    # The user's value would make `logs --rank` show nothing: hpctl's wins, and the manifest says why.
    assert "# hpctl's value, for `hpctl logs --rank`; env_vars.TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE is ignored" \
        in artifact.text


def test_render_is_deterministic():
    cluster = {"custom_labels": {"b": "2", "a": "1"}, "annotations": {"z": "1", "y": "2"},
               "env": {"Z": "1", "A": "2"}, "node_selector": {"k2": "v", "k1": "v"}}
    first = BACKEND.render(make_spec(cluster, nodes=2)).text
    reordered = {k: dict(reversed(list(v.items()))) for k, v in cluster.items()}
    spec = make_spec(reordered, nodes=2)
    spec.data = dict(reversed(list(spec.data.items())))
    assert BACKEND.render(spec).text == first
    assert BACKEND.render(make_spec(cluster, nodes=2)).text.encode() == first.encode()


def test_secrets_never_in_text():
    values = {"hf": "hf_SECRETVALUE1", "git": "ghp_SECRETVALUE2", "wandb": "wb_SECRETVALUE3", "api": "SECRETVALUE4"}
    spec = make_spec({"env": {"WANDB_API_KEY": values["wandb"]}},
                     env_vars={"NCCL_DEBUG": "WARN", "HF_TOKEN": values["hf"]},
                     git={"repo_url_or_path": "https://example.com/r.git", "entry_script": "train.py",
                          "token": values["git"]})
    spec.data["recipes"]["model"]["api_key"] = values["api"]
    artifact, config_map, job = render(spec)
    validate_all(config_map, job)
    for value in values.values():
        assert value not in artifact.text
        assert value not in json.dumps(artifact.to_json())
    assert artifact.env == {"HPCTL_SECRET_ENV_VARS_HF_TOKEN": "env_vars.HF_TOKEN",
                            "HPCTL_SECRET_CLUSTER_ENV_WANDB_API_KEY": "cluster.env.WANDB_API_KEY",
                            "HPCTL_SECRET_GIT_TOKEN": "git.token",
                            "HPCTL_SECRET_RECIPES_MODEL_API_KEY": "recipes.model.api_key"}
    # The pods see env_vars/cluster.env secrets under their own names, other secrets as HPCTL_SECRET_*.
    env = {e["name"]: e for e in container(job)["env"]}
    assert sorted(env) == ["HF_TOKEN", "HPCTL_JOB_ID", "HPCTL_SECRET_GIT_TOKEN", "HPCTL_SECRET_RECIPES_MODEL_API_KEY",
                           "NCCL_DEBUG", "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE", "WANDB_API_KEY"]
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert refs == {name: {"name": "llama-8b-secrets", "key": key} for name, key in [
        ("HF_TOKEN", "HPCTL_SECRET_ENV_VARS_HF_TOKEN"), ("WANDB_API_KEY", "HPCTL_SECRET_CLUSTER_ENV_WANDB_API_KEY"),
        ("HPCTL_SECRET_GIT_TOKEN", "HPCTL_SECRET_GIT_TOKEN"),
        ("HPCTL_SECRET_RECIPES_MODEL_API_KEY", "HPCTL_SECRET_RECIPES_MODEL_API_KEY")]}
    assert env["NCCL_DEBUG"] == {"name": "NCCL_DEBUG", "value": "WARN"}
    spec_json = json.loads(config_map["data"]["job_spec.json"])
    assert spec_json["env_vars"]["HF_TOKEN"] == spec_json["git"]["token"] == "(sensitive)"
    secret = secret_manifest("ml", "llama-8b", {name: "v" for name in artifact.env})
    validate_core(secret)
    assert sorted(secret["stringData"]) == sorted(artifact.env)


def test_null_env_values_are_skipped_and_the_cluster_env_wins():
    spec = make_spec({"env": {"NCCL_DEBUG": "INFO", "HF_TOKEN": "plain-now"}},
                     env_vars={"NCCL_DEBUG": "WARN", "UNSET": None, "HF_TOKEN": "hf_SECRET"})
    artifact, _, job = render(spec)
    env = {e["name"]: e for e in container(job)["env"]}
    assert sorted(env) == ["HF_TOKEN", "HPCTL_JOB_ID", "NCCL_DEBUG", "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"]
    assert env["NCCL_DEBUG"]["value"] == "INFO"
    # cluster.env.HF_TOKEN is sensitive too, so both values travel only through the Secret.
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "HPCTL_SECRET_CLUSTER_ENV_HF_TOKEN"
    assert "plain-now" not in artifact.text and "hf_SECRET" not in artifact.text


def test_job_name_becomes_a_kubernetes_name():
    spec = make_spec()
    spec.data["recipes"]["run"]["name"] = "HF_Llama3 8B"
    _, config_map, job = render(spec)
    assert job["metadata"]["name"] == "hf-llama3-8b" and config_map["metadata"]["name"] == "hf-llama3-8b-spec"
    for bad in ("8b-model", "x" * 51, "___"):
        spec.data["recipes"]["run"]["name"] = bad
        with pytest.raises(HpctlError) as err:
            BACKEND.render(spec)
        assert err.value.problems[0].key == "recipes.run.name"


@pytest.mark.parametrize("cluster, top, key, needle", [
    ({"pullPolicy": "Allways"}, {}, "cluster.pullPolicy", "did you mean 'Always'?"),
    ({"restartPolicy": "OnFail"}, {}, "cluster.restartPolicy", "did you mean 'OnFailure'?"),
    ({"job_kind": "PytorchJob"}, {}, "cluster.job_kind", "did you mean 'PyTorchJob'?"),
    ({"custom_labels": {"team": "x: y"}}, {}, "cluster.custom_labels.team", "label value"),
    ({"custom_labels": {"app": "mine"}}, {}, "cluster.custom_labels.app", "set by hpctl"),
    ({"custom_labels": {"hpctl/tag": "mine"}}, {}, "cluster.custom_labels.hpctl/tag", "set by hpctl"),
    ({"queue": "bad queue"}, {}, "cluster.queue", "label value"),
    ({"annotations": {"bad key!": "v"}}, {}, "cluster.annotations.bad key!", "key"),
    ({"annotations": {"example.com/token": "abc"}}, {}, "cluster.annotations.example.com/token", "sensitive"),
    ({"label_selector": {"preferred": {"a": ["b"]}, "weights": []}}, {}, "cluster.label_selector.weights", "weight"),
    ({"shm_size": "lots"}, {}, "cluster.shm_size", "quantity"),
    ({"namespace": "ML_Team"}, {}, "cluster.namespace", "namespace"),
    ({"volumes": [{"volumeName": "Data", "hostPath": "/d", "mountPath": "/d"}]}, {},
     "cluster.volumes.0.volumeName", "volume name"),
    ({"persistent_volume_claims": [{"claimName": "", "mountPath": "/x"}]}, {},
     "cluster.persistent_volume_claims.0", "claimName and mountPath"),
    ({"volumes": [{"volumeName": "dshm", "hostPath": "/d", "mountPath": "/d"}]}, {}, "cluster.volumes", "dshm"),
    ({"job_kind": "HyperPodPyTorchJob", "restartPolicy": "ExitCode"}, {}, "cluster.restartPolicy", "ExitCode"),
    ({}, {"container": None}, "cluster.image", "container image"),
])
def test_bad_cluster_config_is_a_located_error(cluster, top, key, needle):
    with pytest.raises(HpctlError) as err:
        BACKEND.render(make_spec(cluster, **top))
    problem = err.value.problems[0]
    assert problem.key == key
    assert needle in err.value.render()


@pytest.mark.slow
def test_plan_never_imports_the_kubernetes_client():
    code = ("import sys, json; from hpctl.spec import Spec; from hpctl.backends import get_backend;"
            "spec = Spec(data=json.loads(sys.argv[1]), cluster_name='k8s');"
            "get_backend('k8s').render(spec);"
            "print(sorted(m for m in sys.modules if m == 'kubernetes' or m.startswith('kubernetes.')))")
    for spec in (make_spec(), ft_spec()):  # and under fault tolerance (kubernetes_ft)
        out = subprocess.run([sys.executable, "-c", code, json.dumps(spec.data)], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]"


# ---- fault tolerance (trainer.fault_tolerance): a PyTorchJob per replica group and a lighthouse ----

def ft_spec(cluster: dict[str, Any] | None = None, nodes: int = 4, devices: int = 8, groups: int = 2,
            **ft: Any) -> Spec:
    spec = make_spec(cluster, nodes=nodes, devices=devices, accelerator="gpu")
    spec.data["recipes"]["trainer"]["fault_tolerance"] = {
        "enabled": True, "replica_groups": groups, "lighthouse_port": 29510, **ft}
    return spec


def by_kind(text: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in parse(text):
        out.setdefault(doc["kind"], []).append(doc)
    return out


def test_fault_tolerance_renders_one_job_per_group_and_the_lighthouse():
    """4 nodes x 8 GPUs in 2 groups: two PyTorchJobs of 2 nodes each (the CRD's schema, pod
    templates and the Deployment and Service by kubernetes-validate's Kubernetes 1.30 schemas,
    strictly), each group's pods told their group and the lighthouse's Service DNS name."""
    from hpctl import ft_launch
    spec = ft_spec(max_restarts=5, min_replicas=1, heartbeat_timeout_s=2)
    artifact = BACKEND.render(spec)
    docs = by_kind(artifact.text)
    assert [d["kind"] for d in parse(artifact.text)] == ["ConfigMap", "PyTorchJob", "PyTorchJob", "Deployment", "Service"]
    (config_map,), jobs, (deployment,), (service,) = docs["ConfigMap"], docs["PyTorchJob"], docs["Deployment"], docs["Service"]
    for job in jobs:
        validate_all(config_map, job)
    validate_core(deployment)
    validate_core(service)
    assert json.loads(config_map["data"]["job_spec.json"]) == spec.public_data()

    url = "http://llama-8b-lighthouse.ml.svc:29510"
    assert [j["metadata"]["name"] for j in jobs] == ["llama-8b-g0", "llama-8b-g1"]
    for group, job in enumerate(jobs):
        assert job["metadata"]["labels"] == {"app": "llama-8b", "hpctl/replica-group": str(group)}
        # 5 restarts of the group (each restarts both its pods) survive; the operator fails it at 11 container restarts
        assert job["spec"]["runPolicy"] == {"backoffLimit": 11}
        replicas = job["spec"]["pytorchReplicaSpecs"]
        assert {k: (v["replicas"], v["restartPolicy"]) for k, v in replicas.items()} == {
            "Master": (1, "OnFailure"), "Worker": (1, "OnFailure")}  # the cluster file's Never gives way
        for replica in replicas.values():
            assert replica["template"]["metadata"]["labels"] == job["metadata"]["labels"]
            c = replica["template"]["spec"]["containers"][0]
            assert c["command"][:12] == [
                "torchrun", "--nnodes", "2", "--nproc-per-node", "8", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", "$(MASTER_ADDR):$(MASTER_PORT)", "--rdzv-id", f"llama-8b-g{group}", "--tee=3"]
            env = {e["name"]: e["value"] for e in c["env"]}
            assert (env["HPCTL_REPLICA_GROUP"], env["TORCHFT_LIGHTHOUSE"]) == (str(group), url)
            assert (env["HPCTL_JOB_ID"], env["CUDA_VISIBLE_DEVICES"]) == ("ml/llama-8b", "0,1,2,3,4,5,6,7")
            assert c["resources"]["limits"] == {"nvidia.com/gpu": "8"}

    lighthouse = {"app": "llama-8b", "hpctl/role": "lighthouse"}
    assert deployment["metadata"] == service["metadata"] == {"name": "llama-8b-lighthouse", "namespace": "ml",
                                                             "labels": lighthouse}
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"] == lighthouse
    assert deployment["spec"]["template"]["metadata"]["labels"] == lighthouse
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    ft = ft_launch.settings(spec)
    assert c["command"] == ft_launch.lighthouse_argv(ft, "python3") == [
        "python3", "-m", "adapter.lighthouse", "--port=29510", "--min-replicas=1", "--heartbeat-timeout-ms=2000"]
    assert c["image"] == "registry.example/hpctl:1" and "resources" not in c  # no GPU for the lighthouse
    assert c["ports"] == [{"name": "lighthouse", "containerPort": 29510, "protocol": "TCP"}]
    assert service["spec"]["ports"] == [{"name": "lighthouse", "port": 29510, "targetPort": 29510, "protocol": "TCP"}]

    assert artifact.meta == {"name": "llama-8b", "namespace": "ml", "kind": "PyTorchJob", "replica_groups": "2",
                             "group_nodes": "2", "group_devices": "8"}
    assert artifact.logs["group0"] == "kubectl logs -n ml llama-8b-g0-master-0 -c pytorch"


def test_fault_tolerance_whole_groups_per_node():
    """More groups than nodes: each group is one pod with its share of the node's GPUs (the split
    rule of ft_launch.split, as on Slurm); the cluster's own python runs torchrun and the lighthouse."""
    artifact = BACKEND.render(ft_spec({"python": "/opt/py/bin/python3"}, nodes=2, devices=4, groups=4))
    docs = by_kind(artifact.text)
    assert [j["metadata"]["name"] for j in docs["PyTorchJob"]] == [f"llama-8b-g{g}" for g in range(4)]
    for job in docs["PyTorchJob"]:
        assert crd_errors(job) == []
        assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"] and job["spec"]["nprocPerNode"] == "2"
        c = container(job)
        assert c["command"][3:7] == ["--nnodes", "1", "--nproc-per-node", "2"]
        assert c["resources"]["limits"] == {"nvidia.com/gpu": "2"}
        assert {e["name"]: e["value"] for e in c["env"]}["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert docs["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["command"][0] == "/opt/py/bin/python3"


def test_fault_tolerance_keeps_the_clusters_scheduling_and_secrets_by_reference():
    spec = ft_spec({"service_account_name": "trainer", "node_selector": {"pool": "gpu"}, "queue": "team-a",
                    "pullPolicy": "Always"})
    spec.data["env_vars"]["HF_TOKEN"] = "hf_SECRET_VALUE"
    artifact = BACKEND.render(spec)
    assert "hf_SECRET_VALUE" not in artifact.text
    docs = by_kind(artifact.text)
    for job in docs["PyTorchJob"]:
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"  # each group admitted as a job
        env = {e["name"]: e for e in container(job)["env"]}
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "llama-8b-secrets",
                                                                "key": "HPCTL_SECRET_ENV_VARS_HF_TOKEN"}
    pod = docs["Deployment"][0]["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["nodeSelector"]) == ("trainer", {"pool": "gpu"})
    assert pod["containers"][0]["imagePullPolicy"] == "Always"
    validate_core(docs["Deployment"][0])


def test_fault_tolerance_job_name_leaves_room_for_the_group_suffix():
    spec = ft_spec(groups=2)
    spec.data["recipes"]["run"]["name"] = "x" * 47  # + "-g1" = 50, kubernetes.MAX_NAME
    assert by_kind(BACKEND.render(spec).text)["PyTorchJob"][1]["metadata"]["name"] == "x" * 47 + "-g1"
    for name, groups in (("x" * 48, 2), ("x" * 47, 16)):  # 16 groups: "-g15"
        spec = ft_spec(nodes=16, groups=groups)
        spec.data["recipes"]["run"]["name"] = name
        with pytest.raises(HpctlError, match="too long for its replica groups") as err:
            BACKEND.render(spec)
        assert err.value.problems[0].key == "recipes.run.name"
        assert f"at most {50 - len(f'-g{groups - 1}')} characters" in err.value.render()


def test_fault_tolerance_off_renders_the_plain_job():
    spec = ft_spec()
    spec.data["recipes"]["trainer"]["fault_tolerance"]["enabled"] = False
    assert [d["kind"] for d in parse(BACKEND.render(spec).text)] == ["ConfigMap", "PyTorchJob"]
