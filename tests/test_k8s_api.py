"""The Kubernetes backend's API calls, against a recorded API contract.

No Kubernetes API server can run on this machine (nothing installable ships kube-apiserver; see
shared/notes/feasibility.md section 3), so this is a *recorded contract*, not a live cluster: a
tiny HTTP server on 127.0.0.1, in a thread of the test, answers with Kubernetes API responses
stored as JSON under tests/fixtures/k8s/ (each file: HTTP status, content type, body). The bodies
follow the API's documented shapes (objects as the server returns them, `Status` objects for
errors, the plain-text `404 page not found` of an API group that is not served); they were
written by hand from the API reference, not captured from a cluster.

The real `kubernetes` Python client is pointed at that server through a generated kubeconfig, so
submit, describe, logs and cancel run end to end through the client library: the tests assert
the requests it makes (method, path, query, body kind/apiVersion/namespace) and what the backend
makes of the answers. What this cannot show: admission, the operator's reconciliation, or pods.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from hpctl.backends.base import FAILED, PENDING, RUNNING, SUCCEEDED, UNKNOWN, JobRecord, TaggedJob
from hpctl.backends.common import JobTag
from hpctl.backends.kubernetes import BACKEND, LABEL_NAME, job_state, node_of
from hpctl.errors import HpctlError
from hpctl.spec import Spec

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "k8s"
NS, NAME = "ml", "llama-8b"
JOBS = f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs"
CORE = f"/api/v1/namespaces/{NS}"
SECRET_VAR = "HPCTL_SECRET_ENV_VARS_HF_TOKEN"


class Contract:
    """Routes (method, path) to fixture files, replayed in order (the last one repeats)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[str]] = {}
        self.requests: list[dict[str, Any]] = []

    def on(self, method: str, path: str, *fixtures: str) -> "Contract":
        self.routes[(method, path)] = list(fixtures)
        return self

    def answer(self, method: str, url: str, body: bytes) -> tuple[int, str, bytes]:
        parts = urlsplit(url)
        self.requests.append({"method": method, "path": parts.path, "query": parse_qs(parts.query),
                              "body": json.loads(body) if body else None})
        queue = self.routes.get((method, parts.path))
        if not queue:
            return 500, "text/plain", f"no recorded response for {method} {parts.path}".encode()
        fixture = json.loads((FIXTURES / (queue.pop(0) if len(queue) > 1 else queue[0])).read_text())
        payload = fixture["body"] if isinstance(fixture["body"], str) else json.dumps(fixture["body"])
        return fixture["status"], fixture["content_type"], payload.encode()

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]


@pytest.fixture
def contract() -> Iterator[tuple[Contract, int]]:
    recorded = Contract()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, content_type, payload = recorded.answer(self.command, self.path, body)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield recorded, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def kubeconfig(tmp_path: Path, port: int) -> Path:
    """A kubeconfig whose only cluster is the contract server (JSON is valid YAML)."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "contract",
        "clusters": [{"name": "contract", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "tester", "user": {"token": "contract-test-token"}}],
        "contexts": [{"name": "contract", "context": {"cluster": "contract", "user": "tester"}}],
    }))
    return path


def make_spec(config: Path | str, **cluster: Any) -> Spec:
    return Spec(data={
        "cluster_type": "k8s", "container": "registry.example/hpctl:1",
        "env_vars": {"NCCL_DEBUG": "WARN", "HF_TOKEN": "hf_SECRET_VALUE"},
        "cluster": {"type": "k8s", "namespace": NS, "kubeconfig": str(config), "context": "contract", **cluster},
        "recipes": {"run": {"name": NAME, "results_dir": "/fsx/results/llama-8b"},
                    "trainer": {"devices": 8, "num_nodes": 2, "accelerator": "gpu"}},
    }, recipe_name="llama-8b", cluster_name="k8s")


def record_of(spec: Spec, job_id: str = f"{NS}/{NAME}") -> JobRecord:
    artifact = BACKEND.render(spec)
    return JobRecord(name=NAME, cluster="k8s", backend="k8s", job_id=job_id, spec_digest="",
                     spec=spec.public_data(), artifact=artifact.to_json(), results_dir=artifact.results_dir,
                     logs=artifact.logs, applied_at="")


def test_submit_creates_secret_configmap_then_job(contract, tmp_path):
    recorded, port = contract
    recorded.on("POST", f"{CORE}/secrets", "secret_created.json")
    recorded.on("POST", f"{CORE}/configmaps", "configmap_created.json")
    recorded.on("POST", JOBS, "pytorchjob_created.json")
    artifact = BACKEND.render(make_spec(kubeconfig(tmp_path, port)))
    assert artifact.env == {SECRET_VAR: "env_vars.HF_TOKEN"}

    assert BACKEND.submit(artifact, {SECRET_VAR: "hf_SECRET_VALUE"}) == f"{NS}/{NAME}"

    assert recorded.calls() == [("POST", f"{CORE}/secrets"), ("POST", f"{CORE}/configmaps"), ("POST", JOBS)]
    secret, config_map, job = (r["body"] for r in recorded.requests)
    assert (secret["apiVersion"], secret["kind"], secret["metadata"]["namespace"]) == ("v1", "Secret", NS)
    assert secret["metadata"]["name"] == "llama-8b-secrets"
    assert secret["stringData"] == {SECRET_VAR: "hf_SECRET_VALUE"}  # the value travels only here
    assert (config_map["apiVersion"], config_map["kind"], config_map["metadata"]) == (
        "v1", "ConfigMap", {"name": "llama-8b-spec", "namespace": NS, "labels": {"app": NAME}})
    assert json.loads(config_map["data"]["job_spec.json"])["env_vars"]["HF_TOKEN"] == "(sensitive)"
    assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"], job["metadata"]["name"]) == (
        "kubeflow.org/v1", "PyTorchJob", NS, NAME)
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    assert all(r["query"] == {} for r in recorded.requests)


def test_a_tagged_job_is_labelled_and_found_by_one_selector_list(contract, tmp_path):
    """apply's tag goes on the job object as labels (valid label values); find_tagged asks with
    one list call selecting the tag's label, and reads the job's state and spec label back."""
    recorded, port = contract
    recorded.on("POST", f"{CORE}/configmaps", "configmap_created.json")
    recorded.on("POST", JOBS, "pytorchjob_created.json")
    recorded.on("GET", JOBS, "pytorchjob_list_tagged.json")
    spec = make_spec(kubeconfig(tmp_path, port))
    del spec.data["env_vars"]["HF_TOKEN"]
    artifact = BACKEND.render(spec)
    tag = JobTag("hpctl-0123456789abcdef01234567", "89abcdef0123")

    BACKEND.submit(artifact, {}, tag)
    labels = recorded.requests[-1]["body"]["metadata"]["labels"]
    assert labels == {"app": NAME, "hpctl/tag": tag.value, "hpctl/spec": tag.spec}
    assert all(LABEL_NAME.match(v) and len(v) <= 63 for v in labels.values())

    assert BACKEND.find_tagged(artifact, tag) == [TaggedJob(f"{NS}/{NAME}", RUNNING, tag.spec)]
    assert recorded.calls()[-1] == ("GET", JOBS)
    assert recorded.requests[-1]["query"]["labelSelector"] == [f"hpctl/tag={tag.value}"]


def test_submit_without_secrets_replaces_a_leftover_configmap(contract, tmp_path):
    recorded, port = contract
    recorded.on("POST", f"{CORE}/configmaps", "configmap_conflict.json")
    recorded.on("PUT", f"{CORE}/configmaps/llama-8b-spec", "configmap_replaced.json")
    recorded.on("POST", JOBS, "pytorchjob_created.json")
    spec = make_spec(kubeconfig(tmp_path, port))
    del spec.data["env_vars"]["HF_TOKEN"]
    artifact = BACKEND.render(spec)

    assert BACKEND.submit(artifact, {}) == f"{NS}/{NAME}"

    assert recorded.calls() == [("POST", f"{CORE}/configmaps"), ("PUT", f"{CORE}/configmaps/llama-8b-spec"),
                                ("POST", JOBS)]
    assert recorded.requests[1]["body"]["kind"] == "ConfigMap"


def test_submit_refuses_missing_secret_values_before_any_request(contract, tmp_path):
    recorded, port = contract
    artifact = BACKEND.render(make_spec(kubeconfig(tmp_path, port)))
    with pytest.raises(HpctlError, match="secret values missing") as err:
        BACKEND.submit(artifact, {})
    assert SECRET_VAR in err.value.render()
    assert recorded.requests == []


def test_submit_to_a_cluster_without_the_crd(contract, tmp_path):
    recorded, port = contract
    recorded.on("POST", f"{CORE}/secrets", "secret_created.json")
    recorded.on("POST", f"{CORE}/configmaps", "configmap_created.json")
    recorded.on("POST", JOBS, "crd_missing.json")
    with pytest.raises(HpctlError) as err:
        BACKEND.submit(BACKEND.render(make_spec(kubeconfig(tmp_path, port))), {SECRET_VAR: "x"})
    text = err.value.render()
    assert "create PyTorchJob ml/llama-8b: 404 Not Found: 404 page not found" in text
    assert "does not serve kubeflow.org/v1 pytorchjobs" in text and "CRD" in text


def test_submit_forbidden_names_status_reason_and_rbac(contract, tmp_path):
    recorded, port = contract
    recorded.on("POST", f"{CORE}/configmaps", "configmap_created.json")
    recorded.on("POST", JOBS, "forbidden.json")
    spec = make_spec(kubeconfig(tmp_path, port))
    del spec.data["env_vars"]["HF_TOKEN"]
    with pytest.raises(HpctlError) as err:
        BACKEND.submit(BACKEND.render(spec), {})
    text = err.value.render()
    assert "403 Forbidden" in text and 'User "alice" cannot create resource "pytorchjobs"' in text
    assert "RBAC" in text


def test_describe_follows_running_then_succeeded(contract, tmp_path):
    recorded, port = contract
    recorded.on("GET", f"{JOBS}/{NAME}", "pytorchjob_running.json", "pytorchjob_succeeded.json")
    record = record_of(make_spec(kubeconfig(tmp_path, port)))

    running = BACKEND.describe(record)
    done = BACKEND.describe(record)

    assert (running.state, running.backend_state, running.exit_code) == (RUNNING, "Running", None)
    assert (done.state, done.backend_state, done.exit_code) == (SUCCEEDED, "Succeeded", 0)
    assert done.detail == "PyTorchJob ml/llama-8b successfully completed."
    assert recorded.calls() == [("GET", f"{JOBS}/{NAME}")] * 2


def test_describe_failed_job(contract, tmp_path):
    recorded, port = contract
    recorded.on("GET", f"{JOBS}/{NAME}", "pytorchjob_failed.json")
    status = BACKEND.describe(record_of(make_spec(kubeconfig(tmp_path, port))))
    assert (status.state, status.backend_state) == (FAILED, "Failed")
    assert "1 Master replica(s) failed" in status.detail


def test_describe_a_deleted_job_and_a_missing_crd(contract, tmp_path):
    recorded, port = contract
    recorded.on("GET", f"{JOBS}/{NAME}", "pytorchjob_not_found.json", "crd_missing.json")
    record = record_of(make_spec(kubeconfig(tmp_path, port)))
    gone = BACKEND.describe(record)
    assert (gone.state, gone.backend_state) == (UNKNOWN, "NotFound")
    with pytest.raises(HpctlError, match="404 Not Found"):
        BACKEND.describe(record)


def test_describe_hyperpod_job_uses_its_group_and_plural(contract, tmp_path):
    recorded, port = contract
    path = f"/apis/sagemaker.amazonaws.com/v1/namespaces/{NS}/hyperpodpytorchjobs/{NAME}"
    recorded.on("GET", path, "hyperpodpytorchjob_completed.json")
    status = BACKEND.describe(record_of(make_spec(kubeconfig(tmp_path, port), job_kind="HyperPodPyTorchJob")))
    assert (status.state, status.backend_state) == (SUCCEEDED, "Completed")
    assert recorded.calls() == [("GET", path)]


def test_logs_of_node0_and_of_a_rank_on_another_node(contract, tmp_path):
    recorded, port = contract
    recorded.on("GET", f"{CORE}/pods", "pods.json")
    recorded.on("GET", f"{CORE}/pods/llama-8b-master-0/log", "log_master0.json")
    recorded.on("GET", f"{CORE}/pods/llama-8b-worker-0/log", "log_worker0.json")
    record = record_of(make_spec(kubeconfig(tmp_path, port)))

    # Without --rank: node 0's whole log, every rank's lines and torchrun's own, as the pod wrote them.
    master_log = json.loads((FIXTURES / "log_master0.json").read_text())["body"]
    assert list(BACKEND.logs(record)) == master_log.splitlines()
    # 8 devices per node: rank 8 is node 1, the Worker replica 0; follow streams the same endpoint,
    # and keeps rank 8's lines only (the worker's last line has no newline).
    assert list(BACKEND.logs(record, follow=True, rank=8)) == [
        "[rank8]:[W1127 21:30:09.208000 ProcessGroupNCCL.cpp:4715] [PG ID 0 PG GUID 0 Rank 8]  using GPU 0 to "
        "perform barrier as devices used by this process are currently unknown.",
        "step 1 loss 10.3721", "step 2 loss 9.8810"]

    pods_query, log0, _, log8 = (r["query"] for r in recorded.requests)
    assert pods_query == {"labelSelector": [f"app={NAME}"]}
    assert log0 == {"container": ["pytorch"], "follow": ["false"]}
    assert log8 == {"container": ["pytorch"], "follow": ["true"]}
    assert recorded.calls()[3] == ("GET", f"{CORE}/pods/llama-8b-worker-0/log")


def test_logs_of_one_rank_show_only_that_ranks_lines(contract, tmp_path):
    """Node 0's pod holds ranks 0-7 and torchrun's own lines; `logs --rank 1` shows rank 1's, unprefixed."""
    recorded, port = contract
    recorded.on("GET", f"{CORE}/pods", "pods.json")
    recorded.on("GET", f"{CORE}/pods/llama-8b-master-0/log", "log_master0.json")
    record = record_of(make_spec(kubeconfig(tmp_path, port)))

    assert list(BACKEND.logs(record, rank=1)) == [
        "[rank1]:[W1127 21:30:09.201000 ProcessGroupNCCL.cpp:4715] [PG ID 0 PG GUID 0 Rank 1]  using GPU 1 to "
        "perform barrier as devices used by this process are currently unknown.",
        "/usr/local/lib/python3.11/site-packages/torch/utils/data/dataloader.py:626: UserWarning: "
        "This DataLoader will create 4 worker processes in total."]
    assert recorded.calls()[1] == ("GET", f"{CORE}/pods/llama-8b-master-0/log")


def test_logs_before_pods_exist_and_for_a_bad_rank(contract, tmp_path):
    recorded, port = contract
    recorded.on("GET", f"{CORE}/pods", "pods_empty.json")
    record = record_of(make_spec(kubeconfig(tmp_path, port)))
    with pytest.raises(HpctlError, match="no node 1 pod of") as err:
        list(BACKEND.logs(record, rank=15))
    assert "no pods" in err.value.render()
    with pytest.raises(HpctlError, match="no such rank"):
        list(BACKEND.logs(record, rank=16))


def test_cancel_deletes_the_job_and_its_config_but_no_volumes(contract, tmp_path):
    recorded, port = contract
    recorded.on("DELETE", f"{JOBS}/{NAME}", "pytorchjob_deleted.json")
    recorded.on("DELETE", f"{CORE}/configmaps/llama-8b-spec", "configmap_deleted.json")
    recorded.on("DELETE", f"{CORE}/secrets/llama-8b-secrets", "secret_not_found.json")  # never created: fine
    record = record_of(make_spec(kubeconfig(tmp_path, port), persistent_volume_claims=[
        {"claimName": "fsx-claim", "mountPath": "/fsx"}]))

    BACKEND.cancel(record)

    assert recorded.calls() == [("DELETE", f"{JOBS}/{NAME}"), ("DELETE", f"{CORE}/configmaps/llama-8b-spec"),
                                ("DELETE", f"{CORE}/secrets/llama-8b-secrets")]
    assert recorded.requests[0]["query"] == {"propagationPolicy": ["Background"]}  # pods go with the job


def test_cancel_reports_a_forbidden_delete(contract, tmp_path):
    recorded, port = contract
    recorded.on("DELETE", f"{JOBS}/{NAME}", "forbidden.json")
    with pytest.raises(HpctlError, match="403 Forbidden"):
        BACKEND.cancel(record_of(make_spec(kubeconfig(tmp_path, port))))


def test_missing_kubeconfig_is_a_clear_error(tmp_path, monkeypatch):
    record = record_of(make_spec(tmp_path / "nope" / "kubeconfig"))
    with pytest.raises(HpctlError, match="kubeconfig file not found") as err:
        BACKEND.describe(record)
    assert err.value.problems[0].key == "cluster.kubeconfig"

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = make_spec("")
    spec.data["cluster"]["kubeconfig"] = None
    with pytest.raises(HpctlError, match="no kubeconfig found") as err:
        BACKEND.cancel(record_of(spec))
    assert "export KUBECONFIG" in err.value.render()


def test_unreachable_api_server_is_a_clear_error(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(HpctlError, match="cannot reach the Kubernetes API server to read pytorchjobs ml/llama-8b"):
        BACKEND.describe(record_of(make_spec(kubeconfig(tmp_path, port))))


def test_unknown_context_is_a_clear_error(contract, tmp_path):
    _, port = contract
    spec = make_spec(kubeconfig(tmp_path, port), context="prod")
    with pytest.raises(HpctlError, match="cannot load the Kubernetes configuration"):
        BACKEND.describe(record_of(spec))


def test_condition_and_pod_mapping():
    """The pure halves of describe and logs, over shapes the operators write."""
    def cond(kind: str, status: str = "True") -> dict[str, str]:
        return {"type": kind, "status": status}
    assert job_state({}).state == PENDING
    assert job_state({"status": {"conditions": [cond("Created")]}}).state == PENDING
    restarting = job_state({"status": {"conditions": [cond("Created"), cond("Running", "False"), cond("Restarting")]}})
    assert (restarting.state, restarting.backend_state) == (RUNNING, "Restarting")
    assert job_state({"status": {"conditions": [cond("Suspended")]}}).state == PENDING
    pod = lambda name, labels=None: {"metadata": {"name": name, "labels": labels or {}}}  # noqa: E731
    assert node_of(pod("j-master-0", {"training.kubeflow.org/replica-type": "master",
                                      "training.kubeflow.org/replica-index": "0"})) == 0
    assert node_of(pod("j-worker-2", {"training.kubeflow.org/replica-type": "Worker",
                                      "training.kubeflow.org/replica-index": "2"})) == 3
    assert node_of(pod("j-pod-5")) == 5  # HyperPod: one replica group, index from the name
    assert node_of(pod("j-pod")) is None


# ---- fault tolerance (trainer.fault_tolerance): one PyTorchJob per replica group and a lighthouse ----

SERVICES = f"{CORE}/services"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
LIGHTHOUSE = f"{NAME}-lighthouse"
GROUP_JOBS = (f"{NAME}-g0", f"{NAME}-g1")


def ft_spec(config: Path | str, **cluster: Any) -> Spec:
    """4 nodes x 8 GPUs in 2 replica groups: each group a PyTorchJob of 2 nodes (Master + 1 Worker)."""
    spec = make_spec(config, **cluster)
    spec.data["recipes"]["trainer"].update(num_nodes=4, fault_tolerance={
        "enabled": True, "replica_groups": 2, "lighthouse_port": 29510, "max_restarts": 3})
    return spec


def test_ft_submit_creates_the_lighthouse_then_one_tagged_job_per_group(contract, tmp_path):
    recorded, port = contract
    recorded.on("POST", f"{CORE}/secrets", "secret_created.json")
    recorded.on("POST", f"{CORE}/configmaps", "configmap_created.json")
    recorded.on("POST", SERVICES, "service_created.json")
    recorded.on("POST", DEPLOYMENTS, "deployment_created.json")
    recorded.on("POST", JOBS, "ft_pytorchjob_g0_created.json", "ft_pytorchjob_g1_created.json")
    artifact = BACKEND.render(ft_spec(kubeconfig(tmp_path, port)))
    tag = JobTag("hpctl-0123456789abcdef01234567", "89abcdef0123")

    assert BACKEND.submit(artifact, {SECRET_VAR: "hf_SECRET_VALUE"}, tag) == f"{NS}/{NAME}"  # the id recorded

    assert recorded.calls() == [("POST", f"{CORE}/secrets"), ("POST", f"{CORE}/configmaps"), ("POST", SERVICES),
                                ("POST", DEPLOYMENTS), ("POST", JOBS), ("POST", JOBS)]
    secret, config_map, service, deployment, *jobs = (r["body"] for r in recorded.requests)
    assert secret["stringData"] == {SECRET_VAR: "hf_SECRET_VALUE"} and config_map["metadata"]["name"] == f"{NAME}-spec"
    assert (service["apiVersion"], service["kind"], service["metadata"]["name"]) == ("v1", "Service", LIGHTHOUSE)
    assert service["spec"]["ports"] == [{"name": "lighthouse", "port": 29510, "targetPort": 29510, "protocol": "TCP"}]
    assert (deployment["apiVersion"], deployment["kind"], deployment["metadata"]["name"]) == (
        "apps/v1", "Deployment", LIGHTHOUSE)
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["containers"][0]["command"][1:3] == ["-m", "adapter.lighthouse"]
    assert [j["metadata"]["name"] for j in jobs] == list(GROUP_JOBS)
    for group, job in enumerate(jobs):
        assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"]) == ("kubeflow.org/v1", "PyTorchJob", NS)
        assert job["metadata"]["labels"] == {"app": NAME, "hpctl/replica-group": str(group),
                                             "hpctl/tag": tag.value, "hpctl/spec": tag.spec}
        assert job["spec"]["runPolicy"] == {"backoffLimit": 7}  # max_restarts 3 x 2 pods a group, + 1
        for replica in job["spec"]["pytorchReplicaSpecs"].values():
            assert replica["restartPolicy"] == "OnFailure"
            env = {e["name"]: e.get("value") for e in replica["template"]["spec"]["containers"][0]["env"]}
            assert env["HPCTL_REPLICA_GROUP"] == str(group)
            assert env["TORCHFT_LIGHTHOUSE"] == f"http://{LIGHTHOUSE}.{NS}.svc:29510"
            assert env["HPCTL_JOB_ID"] == f"{NS}/{NAME}"


def test_ft_a_leftover_lighthouse_service_is_patched_not_replaced(contract, tmp_path):
    """A Service left by an earlier apply of the same job: patched (a replace would have to repeat
    the clusterIP the API server allocated); the Deployment is created as usual."""
    recorded, port = contract
    recorded.on("POST", f"{CORE}/configmaps", "configmap_created.json")
    recorded.on("POST", SERVICES, "service_conflict.json")
    recorded.on("PATCH", f"{SERVICES}/{LIGHTHOUSE}", "service_patched.json")
    recorded.on("POST", DEPLOYMENTS, "deployment_created.json")
    recorded.on("POST", JOBS, "ft_pytorchjob_g0_created.json", "ft_pytorchjob_g1_created.json")
    spec = ft_spec(kubeconfig(tmp_path, port))
    del spec.data["env_vars"]["HF_TOKEN"]

    BACKEND.submit(BACKEND.render(spec), {})

    assert recorded.calls() == [("POST", f"{CORE}/configmaps"), ("POST", SERVICES), ("PATCH", f"{SERVICES}/{LIGHTHOUSE}"),
                                ("POST", DEPLOYMENTS), ("POST", JOBS), ("POST", JOBS)]
    assert recorded.requests[2]["body"]["spec"]["ports"][0]["port"] == 29510


def test_ft_submit_refuses_missing_secret_values_before_any_request(contract, tmp_path):
    recorded, port = contract
    with pytest.raises(HpctlError, match="secret values missing"):
        BACKEND.submit(BACKEND.render(ft_spec(kubeconfig(tmp_path, port))), {})
    assert recorded.requests == []


def test_ft_find_tagged_answers_one_job_for_its_groups(contract, tmp_path):
    """apply's recovery of a job an apply died submitting: the group jobs carry the tag; the answer
    is the job hpctl records (<ns>/<name>), in the groups' state (group 0 running, group 1 created)."""
    recorded, port = contract
    recorded.on("GET", JOBS, "ft_pytorchjob_list_tagged.json")
    tag = JobTag("hpctl-0123456789abcdef01234567", "89abcdef0123")

    found = BACKEND.find_tagged(BACKEND.render(ft_spec(kubeconfig(tmp_path, port))), tag)

    assert found == [TaggedJob(f"{NS}/{NAME}", RUNNING, tag.spec)]
    assert recorded.requests[-1]["query"]["labelSelector"] == [f"hpctl/tag={tag.value}"]


def test_ft_describe_aggregates_the_group_jobs(contract, tmp_path):
    """One list call; a restarting group is running; a group past its backoffLimit fails the job
    (as local and Slurm end FAILED when a group gave up); every group Succeeded: SUCCEEDED."""
    recorded, port = contract
    recorded.on("GET", JOBS, "ft_pytorchjob_list_restarting.json", "ft_pytorchjob_list_failed.json",
                "ft_pytorchjob_list_succeeded.json", "ft_pytorchjob_list_one_gone.json")
    record = record_of(ft_spec(kubeconfig(tmp_path, port)))

    running, failed, succeeded, gone = (BACKEND.describe(record) for _ in range(4))

    assert (running.state, running.backend_state, running.detail) == (RUNNING, "Running,Restarting",
                                                                      "2/2 groups running")
    assert (failed.state, failed.backend_state, failed.exit_code) == (FAILED, "Running,Failed", None)
    assert failed.detail == ("replica group 1 failed after its restarts: Job llama-8b-g1 has failed because it "
                             "has reached the specified backoff limit; 1/2 groups running")
    assert (succeeded.state, succeeded.exit_code, succeeded.detail) == (SUCCEEDED, 0, "2/2 groups succeeded")
    assert (gone.state, gone.backend_state) == (UNKNOWN, "NotFound,Running")
    assert gone.detail == "the PyTorchJob of replica group 0 no longer exists; 1/2 groups running"
    assert recorded.calls() == [("GET", JOBS)] * 4


def test_ft_describe_many_lists_once_for_plain_and_fault_tolerant_jobs(contract, tmp_path):
    recorded, port = contract
    recorded.on("GET", JOBS, "ft_pytorchjob_list_restarting.json")
    config = kubeconfig(tmp_path, port)
    ft = record_of(ft_spec(config))
    plain = dataclasses.replace(record_of(make_spec(config), f"{NS}/other-job"), name="other-job")

    statuses = BACKEND.describe_many([ft, plain])

    assert (statuses[NAME].state, statuses[NAME].detail) == (RUNNING, "2/2 groups running")
    assert (statuses["other-job"].state, statuses["other-job"].backend_state) == (SUCCEEDED, "Succeeded")
    assert recorded.calls() == [("GET", JOBS)]


def test_ft_logs_find_the_group_and_node_of_a_rank(contract, tmp_path):
    """Group 0's first node without --rank; global rank 24 is group 1 (16 ranks a group), its rank 8,
    on its second node (Worker 0), whose torchrun prefixes the group's own rank."""
    recorded, port = contract
    recorded.on("GET", f"{CORE}/pods", "ft_pods_group0.json", "ft_pods_group1.json")
    recorded.on("GET", f"{CORE}/pods/{NAME}-g0-master-0/log", "ft_log_g0_master0.json")
    recorded.on("GET", f"{CORE}/pods/{NAME}-g1-worker-0/log", "ft_log_g1_worker0.json")
    record = record_of(ft_spec(kubeconfig(tmp_path, port)))

    master_log = json.loads((FIXTURES / "ft_log_g0_master0.json").read_text())["body"]
    assert list(BACKEND.logs(record)) == master_log.splitlines()
    assert list(BACKEND.logs(record, rank=24)) == [
        "adapter: [fault tolerance] === recovery: replica group 1 rejoined at step 12, healed from a live peer in "
        "1.84 s ===", "step 13 loss 8.1034"]

    selectors = [r["query"]["labelSelector"] for r in recorded.requests if r["path"] == f"{CORE}/pods"]
    assert selectors == [[f"app={NAME},hpctl/replica-group=0"], [f"app={NAME},hpctl/replica-group=1"]]
    with pytest.raises(HpctlError, match="no such rank") as err:
        list(BACKEND.logs(record, rank=32))
    assert "0..31" in err.value.render()


def test_ft_cancel_deletes_every_group_job_and_the_lighthouse(contract, tmp_path):
    recorded, port = contract
    for group, job in enumerate(GROUP_JOBS):
        recorded.on("DELETE", f"{JOBS}/{job}", f"ft_pytorchjob_g{group}_deleted.json")
    recorded.on("DELETE", f"{DEPLOYMENTS}/{LIGHTHOUSE}", "deployment_deleted.json")
    recorded.on("DELETE", f"{SERVICES}/{LIGHTHOUSE}", "service_not_found.json")  # already gone: fine
    recorded.on("DELETE", f"{CORE}/configmaps/llama-8b-spec", "configmap_deleted.json")
    recorded.on("DELETE", f"{CORE}/secrets/llama-8b-secrets", "secret_not_found.json")

    BACKEND.cancel(record_of(ft_spec(kubeconfig(tmp_path, port))))

    assert recorded.calls() == [("DELETE", f"{JOBS}/{GROUP_JOBS[0]}"), ("DELETE", f"{JOBS}/{GROUP_JOBS[1]}"),
                                ("DELETE", f"{DEPLOYMENTS}/{LIGHTHOUSE}"), ("DELETE", f"{SERVICES}/{LIGHTHOUSE}"),
                                ("DELETE", f"{CORE}/configmaps/llama-8b-spec"),
                                ("DELETE", f"{CORE}/secrets/llama-8b-secrets")]
    assert all(r["query"] == {"propagationPolicy": ["Background"]} for r in recorded.requests[:3])
