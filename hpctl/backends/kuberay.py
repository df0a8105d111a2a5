"""verl on Kubernetes: a KubeRay `RayJob` and the ConfigMap holding the verl config.

What HyperPod's chart (launcher/nemo/k8s_templates/ray) carries, rendered by hpctl
(templates/k8s_rayjob.yaml.j2) and checked here:
  - the ConfigMap `<job>-spec`, mounted read-only at /config on the head: verl_config.yaml (the
    recipe's training_config, hpctl.engines.verl.config_text) beside job_spec.json (the resolved
    spec, secrets redacted, which apply, status and cancel read as for every Kubernetes job);
  - a RayJob in K8sJobMode: the submitter pod runs verl's entry point on the head
    (`python -u -m verl.trainer.main_ppo --config-path /config --config-name verl_config`);
  - a CPU head pod (recipes.ray_cluster.head_node; HyperPod's defaults otherwise) pinned to the GPU
    nodes' instance type, and GPU worker pods: as many as verl asks Ray for (training_config.trainer
    .nnodes, each n_gpus_per_node GPUs), so the placement verl requests always exists. A recipe whose
    ray_cluster.worker_nodes say otherwise is warned about at plan (hpctl.engines.verl);
  - image, pull policy, service account, labels, annotations, PVCs and host volumes, EFA, the job's
    environment (secrets by reference to the `<job>-secrets` Secret apply creates), verl 0.7's
    RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES, shutdownAfterJobFinishes and its TTL.

Status reads the RayJob's jobStatus (Ray's view of the entry point) and jobDeploymentStatus
(KubeRay's view of the cluster); logs read the submitter pod (the entry point's output, as `ray job
submit` follows it), or with `--rank N` node N: 0 the head, k the k-th worker.
"""
from __future__ import annotations

import json
from typing import Any

from hpctl.backends.base import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, Artifact, JobStatus
from hpctl.backends.common import USER_ENV_PREFIXES, job_env, scalar_text, secret_vars
from hpctl.engines import verl
from hpctl.errors import HpctlError
from hpctl.spec import Spec
from hpctl.templating import render as render_template
from hpctl.templating import shquote

TEMPLATE = "k8s_rayjob.yaml.j2"
API_VERSION, KIND = "ray.io/v1", "RayJob"
CONFIG_DIR = "/config"
RAY_VERSION = "2.46.0"  # HyperPod's chart (rayCluster.rayVersion)
TTL_SECONDS = 600  # HyperPod's gc.ttlSecondsAfterFinished
ROLE_LABEL = "ray-role"  # HyperPod's pod labels: head, worker (and here: submitter)
HEAD, WORKER, SUBMITTER = "ray-head", "ray-worker", "ray-job-submitter"  # container names, as HyperPod's
# HyperPod's chart defaults (values.yaml) where a recipe's ray_cluster says nothing
HEAD_DEFAULTS = {"cpu": "4", "memory": "16Gi"}
WORKER_DEFAULTS = {"cpu": "16", "memory": "48Gi"}
SUBMITTER_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
# HyperPod's head and submitter prefer these small CPU instance types (cluster.cpu_instance_type overrides)
CPU_INSTANCE_TYPES = ["ml.c5.large", "ml.c5.xlarge", "ml.c5.2xlarge", "ml.c5.4xlarge", "ml.m5.large", "ml.m5.xlarge",
                      "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.r5.large", "ml.r5.xlarge", "ml.r5.2xlarge"]

# jobStatus (Ray's) first, then jobDeploymentStatus (KubeRay's): -> hpctl's state
JOB_STATES = {"SUCCEEDED": SUCCEEDED, "FAILED": FAILED, "STOPPED": CANCELLED, "RUNNING": RUNNING}
DEPLOYMENT_STATES = {"Failed": FAILED, "ValidationFailed": FAILED, "Complete": SUCCEEDED, "Running": RUNNING,
                     "Suspended": PENDING, "Suspending": PENDING, "Retrying": PENDING, "Initializing": PENDING,
                     "New": PENDING, "Waiting": PENDING}


def _resources(node: dict[str, Any], defaults: dict[str, str], gpus: int, efa: int) -> dict[str, dict[str, str]]:
    """Requests and limits of one pod, as HyperPod's chart writes them: cpu and memory requested
    (limited where the recipe gives cpuLimit/memoryLimit), GPUs and EFA both requested and limited."""
    requests = {k: scalar_text(node.get(k) if node.get(k) not in (None, "") else defaults[k]) for k in ("cpu", "memory")}
    limits = {k: scalar_text(node[f"{k}Limit"]) for k in ("cpu", "memory") if node.get(f"{k}Limit") not in (None, "")}
    for name, count in (("nvidia.com/gpu", gpus), ("vpc.amazonaws.com/efa", efa)):
        if count:
            requests[name] = limits[name] = str(count)
    out = {"requests": dict(sorted(requests.items()))}
    return {**out, "limits": dict(sorted(limits.items()))} if limits else out


def _instance_type(spec: Spec) -> str | None:
    name = spec.get("instance_type") or spec.get("cluster.instance_type")
    if not isinstance(name, str) or not name:
        return None
    return name if name.startswith("ml.") else f"ml.{name}"


def context(spec: Spec) -> dict[str, Any]:
    """Everything templates/k8s_rayjob.yaml.j2 needs. Pure; uses the Kubernetes backend's own
    checks for names, labels and volumes."""
    from hpctl.backends import kubernetes as k8s
    from adapter.tracking import JOB_ID_VAR

    cluster = spec.cluster
    name = k8s.k8s_name(spec.job_name)
    namespace = scalar_text(cluster.get("namespace") or "default")
    if not k8s.DNS_LABEL.match(namespace) or len(namespace) > 63:
        raise HpctlError("not a valid Kubernetes namespace", key="cluster.namespace", found=repr(namespace))
    image = cluster.get("image") or spec.get("container")
    if not image:
        raise HpctlError("a verl job needs a container image with verl and Ray", key="container",
                         hint="set `container` (or cluster.image) to a verl image, e.g. one of HyperPod's "
                              "public verl images")
    engine = verl.engine_of(spec.data)
    assert engine is not None
    nodes, per_node = verl.world(spec)
    labels = k8s._labels(cluster.get("custom_labels"), "cluster.custom_labels")
    for own in (k8s.JOB_LABEL, k8s.TAG_LABEL, k8s.SPEC_LABEL, ROLE_LABEL):
        if own in labels:
            raise HpctlError(f"the label '{own}' is set by hpctl (it names and finds the job)",
                             key=f"cluster.custom_labels.{own}", hint="use another label key")
    labels = dict(sorted({**labels, k8s.JOB_LABEL: name}.items()))
    job_labels = dict(labels)
    queue = "queue" if cluster.get("queue") else "queue_name"
    if cluster.get(queue):
        job_labels = dict(sorted({**labels, k8s.QUEUE_LABEL: k8s._label_value(cluster[queue], f"cluster.{queue}")}.items()))

    extra = {"PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": "", JOB_ID_VAR: f"{namespace}/{name}",
             "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(per_node))}
    instance = spec.get("instance_type")
    if isinstance(instance, str) and instance:  # HyperPod's images configure EFA/RDMA from it
        extra["INSTANCE_TYPE"] = instance
    if engine.version == "0.7":  # vLLM must see every GPU of its node: Ray must not narrow it
        extra["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"] = "1"
    env = [{"name": v.name, "secret_key": v.secret, "value": k8s.literal(v.value)}
           for v in job_env(spec, extra=extra, extra_source="HyperPod's RayJob chart")]
    secrets = secret_vars(spec)
    listed = {e["name"] for e in env}
    env += [{"name": var, "secret_key": var, "value": None} for var, path in secrets.items()
            if var not in listed and not path.startswith(USER_ENV_PREFIXES)]  # the verl config reads ${oc.env:VAR}
    env.sort(key=lambda e: e["name"])
    data = spec.get(verl.CONFIG + ".data") or {}
    head_env = [{"name": "TRAIN_FILES", "secret_key": None, "value": k8s.literal(scalar_text(data.get("train_files")))},
                {"name": "VAL_FILES", "secret_key": None, "value": k8s.literal(scalar_text(data.get("val_files")))}]

    ray = spec.get("recipes.ray_cluster") or {}
    efa = cluster.get("efa_per_node") or 0
    cpu_types = cluster.get("cpu_instance_type") or CPU_INSTANCE_TYPES
    public = spec.public_data()
    return {
        "name": name, "namespace": namespace, "api_version": API_VERSION, "kind": KIND,
        "config_name": f"{name}-spec", "secret_name": f"{name}-secrets", "secret_keys": sorted(secrets),
        "spec_file": k8s.SPEC_FILE, "config_file": verl.CONFIG_FILE, "config_dir": CONFIG_DIR,
        "spec_json": json.dumps(public, sort_keys=True, indent=2, ensure_ascii=True, default=str),
        "verl_config": verl.config_text(spec),
        "labels": labels, "job_labels": job_labels,
        "annotations": k8s._annotations(cluster.get("annotations"), "cluster.annotations"),
        "role_label": ROLE_LABEL,
        "image": scalar_text(image),
        "pull_policy": k8s._choice(cluster.get("pullPolicy") or "IfNotPresent", k8s.PULL_POLICIES, "cluster.pullPolicy"),
        "service_account": scalar_text(cluster.get("service_account_name") or "default"),
        "priority_class": cluster.get("priority_class_name"),
        "instance_type": _instance_type(spec),
        "cpu_instance_types": [cpu_types] if isinstance(cpu_types, str) else list(cpu_types),
        "entrypoint": " ".join(shquote(a) for a in verl.entrypoint(spec, CONFIG_DIR)),
        "ray_version": RAY_VERSION, "ttl": TTL_SECONDS,
        "env": env, "head_env": head_env,
        "head_resources": _resources(ray.get("head_node") or {}, HEAD_DEFAULTS, 0, 0),
        "workers": nodes,
        "worker_resources": _resources(ray.get("worker_nodes") or {}, WORKER_DEFAULTS, per_node, efa),
        "submitter_resources": SUBMITTER_RESOURCES,
        "volumes": k8s._volumes(cluster),
        "containers": {"head": HEAD, "worker": WORKER, "submitter": SUBMITTER},
    }


def render(spec: Spec) -> Artifact:
    ctx = context(spec)
    ns, name = shquote(ctx["namespace"]), shquote(ctx["name"])
    from hpctl.backends.kubernetes import JOB_LABEL
    return Artifact(
        kind="manifest", language="yaml", text=render_template(TEMPLATE, **ctx), env=secret_vars(spec),
        logs={"pods": f"kubectl get pods -n {ns} -l {JOB_LABEL}={name}",
              "driver": f"kubectl logs -n {ns} -l {JOB_LABEL}={name},{ROLE_LABEL}=submitter -c {SUBMITTER}",
              "head": f"kubectl logs -n {ns} -l {JOB_LABEL}={name},{ROLE_LABEL}=head -c {HEAD}"},
        results_dir=scalar_text(spec.get(verl.CONFIG + ".trainer.default_local_dir") or spec.get("recipes.run.results_dir")),
        meta={"name": ctx["name"], "namespace": ctx["namespace"], "kind": KIND})


def job_state(obj: dict[str, Any]) -> JobStatus:
    """A RayJob's status: Ray's jobStatus decides once the entry point ran; before that (or when
    KubeRay gave up on the cluster) KubeRay's jobDeploymentStatus does."""
    status = obj.get("status") or {}
    job, deployment = status.get("jobStatus"), status.get("jobDeploymentStatus")
    state = JOB_STATES.get(job)
    if state is None or (deployment in ("Failed", "ValidationFailed") and state != SUCCEEDED):
        state = DEPLOYMENT_STATES.get(deployment, state or PENDING)
    detail = status.get("message") or status.get("reason") or (
        f"jobStatus {job or '-'}, jobDeploymentStatus {deployment or '-'}")
    return JobStatus(state=state, exit_code=0 if state == SUCCEEDED else None,
                     backend_state="/".join(s for s in (deployment, job) if s) or None, detail=detail)


def pod_for(items: list[dict[str, Any]], rank: int | None) -> tuple[str | None, str]:
    """(pod name, container) whose log `hpctl logs` shows: the submitter (the entry point's
    output) without a rank, else node `rank` (0: the head, k: the k-th worker by name)."""
    def role(p: dict[str, Any]) -> str:
        return str((p.get("metadata", {}).get("labels") or {}).get(ROLE_LABEL, ""))

    ordered = sorted(items, key=lambda p: p["metadata"]["name"])
    if rank is None:
        return next((p["metadata"]["name"] for p in ordered if role(p) == "submitter"), None), SUBMITTER
    if rank == 0:
        return next((p["metadata"]["name"] for p in ordered if role(p) == "head"), None), HEAD
    workers = [p["metadata"]["name"] for p in ordered if role(p) == "worker"]
    return (workers[rank - 1] if 0 < rank <= len(workers) else None), WORKER
