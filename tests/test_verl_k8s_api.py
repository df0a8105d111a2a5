"""A verl job's RayJob through the Kubernetes backend's API calls, against the recorded API contract
of tests/test_k8s_api.py (a local server replaying tests/fixtures/k8s to the real `kubernetes` client).

The RayJob fixtures (rayjob_*.json, ray_pods.json, log_ray_*.json) follow KubeRay's v1 RayJob status
(jobStatus, jobDeploymentStatus) and the pods KubeRay makes, written by hand from KubeRay's CRD and
docs, not captured from a cluster.
"""
from __future__ import annotations

import json
from pathlib import Path

from hpctl.backends.base import RUNNING, SUCCEEDED, JobRecord
from hpctl.backends.kubernetes import BACKEND
from hpctl.spec import Spec
from test_k8s_api import FIXTURES, contract, kubeconfig  # noqa: F401 - contract is a fixture

NS, NAME = "ml", "grpo"
RAYJOBS = f"/apis/ray.io/v1/namespaces/{NS}/rayjobs"
CORE = f"/api/v1/namespaces/{NS}"
SECRET_VAR = "HPCTL_SECRET_RECIPES_TRAINING_CONFIG_REWARD_MODEL_REWARD_KWARGS_KWARGS_API_KEY"


def make_spec(config: Path) -> Spec:
    return Spec(data={
        "cluster_type": "k8s", "container": "registry.example/verl:0.7",
        "cluster": {"type": "k8s", "namespace": NS, "kubeconfig": str(config), "context": "contract"},
        "recipes": {"run": {"name": NAME, "model_type": "verl", "results_dir": "/fsx/results/grpo"},
                    "trainer": {"num_nodes": 2, "devices": 8},
                    "training_config": {
                        "trainer": {"nnodes": 2, "n_gpus_per_node": 8},
                        "data": {"train_files": "/fsx/data/train.parquet"},
                        "reward_model": {"reward_kwargs": {"kwargs": {"api_key": "sk-judge-0123456789"}}}}},
    }, recipe_name="rl/grpo", cluster_name="k8s")


def record_of(spec: Spec) -> JobRecord:
    artifact = BACKEND.render(spec)
    return JobRecord(name=NAME, cluster="k8s", backend="k8s", job_id=f"{NS}/{NAME}", spec_digest="",
                     spec=spec.public_data(), artifact=artifact.to_json(), results_dir=artifact.results_dir,
                     logs=artifact.logs, applied_at="")


def test_submit_creates_the_secret_the_configmap_then_the_rayjob(contract, tmp_path):  # noqa: F811
    recorded, port = contract
    recorded.on("POST", f"{CORE}/secrets", "secret_created.json")
    recorded.on("POST", f"{CORE}/configmaps", "configmap_created.json")
    recorded.on("POST", RAYJOBS, "rayjob_created.json")
    artifact = BACKEND.render(make_spec(kubeconfig(tmp_path, port)))

    assert BACKEND.submit(artifact, {SECRET_VAR: "sk-judge-0123456789"}) == f"{NS}/{NAME}"

    assert recorded.calls() == [("POST", f"{CORE}/secrets"), ("POST", f"{CORE}/configmaps"), ("POST", RAYJOBS)]
    secret, config_map, job = (r["body"] for r in recorded.requests)
    assert secret["stringData"] == {SECRET_VAR: "sk-judge-0123456789"}  # the value travels only here
    verl_config = json.loads(config_map["data"]["verl_config.yaml"])
    assert verl_config["reward_model"]["reward_kwargs"]["kwargs"]["api_key"] == "${oc.env:" + SECRET_VAR + "}"
    assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == ("ray.io/v1", "RayJob", NAME)
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2


def test_describe_reads_job_status_and_deployment_status(contract, tmp_path):  # noqa: F811
    recorded, port = contract
    recorded.on("GET", f"{RAYJOBS}/{NAME}", "rayjob_running.json", "rayjob_succeeded.json")
    recorded.on("GET", RAYJOBS, "rayjob_list.json")
    record = record_of(make_spec(kubeconfig(tmp_path, port)))
    running, done = BACKEND.describe(record), BACKEND.describe(record)
    assert (running.state, running.backend_state) == (RUNNING, "Running/RUNNING")
    assert (done.state, done.backend_state, done.exit_code, done.detail) == (
        SUCCEEDED, "Complete/SUCCEEDED", 0, "Job finished successfully.")
    statuses = BACKEND.describe_many([record])  # `hpctl status`: one list call for every job
    assert statuses[NAME].state == SUCCEEDED and recorded.calls()[-1] == ("GET", RAYJOBS)


def test_logs_show_the_submitter_then_a_node_on_request(contract, tmp_path):  # noqa: F811
    recorded, port = contract
    recorded.on("GET", f"{CORE}/pods", "ray_pods.json")
    recorded.on("GET", f"{CORE}/pods/grpo-x7k2p/log", "log_ray_submitter.json")
    recorded.on("GET", f"{CORE}/pods/grpo-raycluster-5mq8z-head-h7c9w/log", "log_ray_head.json")
    record = record_of(make_spec(kubeconfig(tmp_path, port)))

    submitter = json.loads((FIXTURES / "log_ray_submitter.json").read_text())["body"]
    assert list(BACKEND.logs(record)) == submitter.splitlines()
    head = json.loads((FIXTURES / "log_ray_head.json").read_text())["body"]
    assert list(BACKEND.logs(record, rank=0)) == head.splitlines()
    queries = [r["query"] for r in recorded.requests]
    assert queries[0] == {"labelSelector": [f"app={NAME}"]}
    assert queries[1] == {"container": ["ray-job-submitter"], "follow": ["false"]}
    assert queries[3] == {"container": ["ray-head"], "follow": ["false"]}


def test_cancel_deletes_the_rayjob_its_configmap_and_secret(contract, tmp_path):  # noqa: F811
    recorded, port = contract
    recorded.on("DELETE", f"{RAYJOBS}/{NAME}", "rayjob_deleted.json")
    recorded.on("DELETE", f"{CORE}/configmaps/grpo-spec", "configmap_deleted.json")
    recorded.on("DELETE", f"{CORE}/secrets/grpo-secrets", "secret_not_found.json")
    BACKEND.cancel(record_of(make_spec(kubeconfig(tmp_path, port))))
    assert recorded.calls() == [("DELETE", f"{RAYJOBS}/{NAME}"), ("DELETE", f"{CORE}/configmaps/grpo-spec"),
                                ("DELETE", f"{CORE}/secrets/grpo-secrets")]
