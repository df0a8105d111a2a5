"""The Kubernetes backend: a ConfigMap holding the resolved spec plus a PyTorchJob.

`render` turns the spec into a multi-document manifest (templates/k8s.yaml.j2): a ConfigMap with
the spec as JSON (secrets redacted), mounted at /config, and a Kubeflow `PyTorchJob` (or SageMaker
HyperPod's `HyperPodPyTorchJob` when `cluster.job_kind` says so) whose pods run torchrun on
`python -m adapter.train --config /config/job_spec.json`. Secrets reach the pods only through a
Secret named `<job>-secrets` that `submit` creates from the submitting process's values; the
manifest names the keys, never the values. Under trainer.fault_tolerance the manifest is
hpctl.backends.kubernetes_ft's: a PyTorchJob per replica group, and the lighthouse's Deployment and Service.

The `kubernetes` client library is imported only when the API server is called (submit,
describe, logs, cancel, and find_tagged for a job an apply died submitting), so `hpctl plan`
works on machines without it; where it is needed and missing, the error names the extra.

Node and rank mapping, used by `logs --rank`: a job of N nodes with D devices each has global
ranks 0..N*D-1, grouped per node, so rank r runs on node r // D. Node 0 is the `Master` replica
(pod `<job>-master-0`), node k >= 1 is `Worker` replica k-1 (pod `<job>-worker-<k-1>`). A
HyperPodPyTorchJob has one replica group; its node k is the pod whose name ends in `-<k>`. That
pod's log holds all D ranks of the node, each line prefixed by torchrun (adapter.rank_prefix),
and `common.rank_lines` keeps rank r's.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from typing import Any

from adapter.keypath import get_path, join
from adapter.rank_prefix import TEE_ALL, rank_prefix_env
from adapter.secret import is_sensitive
from hpctl import ft_launch
from hpctl.backends.base import (
    FAILED, PENDING, RUNNING, SUCCEEDED, UNKNOWN, Artifact, Backend, JobRecord, JobStatus, TaggedJob)
from hpctl.backends.common import (
    USER_ENV_PREFIXES, JobTag, job_env, positive_int, rank_lines, scalar_text,
    secret_vars)
from hpctl.devices import uses_gpus
from hpctl.engines import uses_ray
from hpctl.entry import entry_point
from hpctl.errors import HpctlError, optional_import
from hpctl.spec import Spec
from hpctl.suggest import did_you_mean
from hpctl.templating import render as render_template
from hpctl.templating import shquote

TEMPLATE = "k8s.yaml.j2"
CONFIG_DIR = "/config"
SPEC_FILE = "job_spec.json"
CONTAINER = "pytorch"  # the Kubeflow training operator looks for the container of this name
AUTO_RESUME = "sagemaker.amazonaws.com/enable-job-auto-resume"
MAX_RETRY = "sagemaker.amazonaws.com/job-max-retry-count"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_LABEL = "app"  # set by hpctl on the job and its pods; logs finds pods by it
TAG_LABEL, SPEC_LABEL = "hpctl/tag", "hpctl/spec"  # apply's JobTag, on the job object (find_tagged)
FT_GROUPS = "replica_groups"  # Artifact.meta: the replica groups of a fault-tolerant job (kubernetes_ft)

# job_kind -> (API group, version, plural)
KINDS = {
    "PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"),
    "HyperPodPyTorchJob": ("sagemaker.amazonaws.com", "v1", "hyperpodpytorchjobs"),
    "RayJob": ("ray.io", "v1", "rayjobs"),  # verl recipes (hpctl.backends.kubernetes_ray)
}
CODE_VOLUME = "hpctl-code"  # a pod's own clone of git.repo_url_or_path (emptyDir)
RESERVED_VOLUMES = ("job-spec", "dshm", CODE_VOLUME)  # the template's ConfigMap, /dev/shm and code volumes
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
CLEAN_POD_POLICIES = ("None", "Running", "All")

# Job condition type -> normalised state, in order of precedence (a finished job keeps its
# earlier Created/Running conditions). HyperPod's operator reports Completed for Succeeded.
CONDITION_STATES = (
    ("Succeeded", SUCCEEDED), ("Completed", SUCCEEDED), ("Failed", FAILED),
    ("Restarting", RUNNING), ("Running", RUNNING), ("Suspended", PENDING), ("Created", PENDING),
)

# Pods are named `<job>-worker-<index>`, and the operator's Service for each is a DNS-1035 label
# of at most 63 characters, so the job name leaves room for the longest suffix.
MAX_NAME = 50
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def k8s_name(job_name: str) -> str:
    """The job name as a Kubernetes object name: lower case, runs of other characters -> '-'."""
    name = re.sub(r"[^a-z0-9]+", "-", job_name.lower()).strip("-")
    if not DNS_LABEL.match(name) or len(name) > MAX_NAME:
        raise HpctlError(
            "the job name cannot be used as a Kubernetes object name",
            key="recipes.run.name", found=repr(job_name),
            expected=f"at most {MAX_NAME} characters of a-z, 0-9 and '-', starting with a letter",
        )
    return name


def job_kind(cluster: dict[str, Any]) -> str | None:
    """The job's kind: cluster.job_kind, else HyperPod v2's use_hyperpod_pytorch_job, else PyTorchJob."""
    default_kind = "HyperPodPyTorchJob" if cluster.get("use_hyperpod_pytorch_job") else "PyTorchJob"  # HyperPod v2
    return _choice(cluster.get("job_kind") or default_kind, tuple(KINDS), "cluster.job_kind")


def literal(value: str) -> str:
    """Escape `$` so Kubernetes' $(VAR) expansion of env values and commands leaves it as typed."""
    return value.replace("$", "$$")


def _choice(value: Any, choices: tuple[str, ...], key: str) -> str | None:
    if value is None:
        return None
    if value not in choices:
        raise HpctlError(f"unknown value for {key.rsplit('.', 1)[-1]}", key=key, found=repr(value),
                         expected=", ".join(choices), hint=did_you_mean(str(value), choices))
    return str(value)


def _label_key(key: Any, path: str) -> str:
    """A label or annotation key, checked: `[dns-subdomain/]name`."""
    key = str(key)
    prefix, _, name = key.rpartition("/")
    if (not name or len(name) > 63 or not LABEL_NAME.match(name)
            or (prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)))):
        raise HpctlError("not a valid Kubernetes label or annotation key", key=path, found=repr(key),
                         expected="[dns-subdomain/]name, name: at most 63 of A-Z a-z 0-9 - _ .")
    return key


def _label_value(value: Any, path: str) -> str:
    value = scalar_text(value)
    if len(value) > 63 or not LABEL_NAME.match(value):
        raise HpctlError("not a valid Kubernetes label value", key=path, found=repr(value),
                         expected="at most 63 of A-Z a-z 0-9 - _ ., starting and ending alphanumeric")
    return value


def _mapping(mapping: Any, path: str) -> dict[str, Any]:
    """A config mapping that may be null, with its keys sorted; sensitive keys refused.

    Labels, annotations and selectors are stored in clear on the cluster, so a secret there
    would leak; it belongs in env_vars, which reach the pods through the Secret.
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise HpctlError("expected a mapping", key=path, found=type(mapping).__name__)
    for key in mapping:
        if is_sensitive(join(path, key)):
            raise HpctlError("a sensitive value cannot be a label, annotation or selector (it would "
                             "be stored in clear)", key=join(path, key), hint="pass it through env_vars")
    return {str(k): mapping[k] for k in sorted(mapping, key=str)}


def _labels(mapping: Any, path: str) -> dict[str, str]:
    return {_label_key(k, join(path, k)): _label_value(v, join(path, k))
            for k, v in _mapping(mapping, path).items()}


def _annotations(mapping: Any, path: str) -> dict[str, str]:
    return {_label_key(k, join(path, k)): scalar_text(v) for k, v in _mapping(mapping, path).items()}


def _selector_terms(mapping: Any, path: str) -> list[tuple[str, list[str]]]:
    """{label: value or [values]} as (key, values) in the order given (preferred weights follow it)."""
    if mapping is None:
        return []
    _mapping(mapping, path)
    return [(_label_key(k, join(path, k)),
             [_label_value(v, join(path, k)) for v in (vs if isinstance(vs, list) else [vs])])
            for k, vs in mapping.items()]


def _affinity(selector: Any) -> dict[str, list]:
    """HyperPod's label_selector: required -> one node selector term, preferred -> weighted terms."""
    selector = selector or {}
    required = _selector_terms(selector.get("required"), "cluster.label_selector.required")
    preferred = _selector_terms(selector.get("preferred"), "cluster.label_selector.preferred")
    weights = selector.get("weights") or []
    if len(weights) != len(preferred) or not all(
            isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 100 for w in weights):
        raise HpctlError("label_selector.weights must give one weight in 1..100 per preferred label",
                         key="cluster.label_selector.weights", found=repr(weights),
                         expected=f"{len(preferred)} integers in 1..100")
    return {"required": required,
            "preferred": [(w, key, values) for w, (key, values) in zip(weights, preferred)]}


def _volumes(cluster: dict[str, Any]) -> list[dict[str, str]]:
    """hostPath volumes and PVCs as {name, mount, host_path, claim}; null entries skipped."""
    out = []
    for i, vol in enumerate(cluster.get("volumes") or []):
        if vol is None:
            continue
        where = f"cluster.volumes.{i}"
        if not isinstance(vol, dict) or not all(vol.get(k) for k in ("volumeName", "hostPath", "mountPath")):
            raise HpctlError("a volume needs volumeName, hostPath and mountPath", key=where, found=repr(vol))
        if not DNS_LABEL.match(str(vol["volumeName"])) or len(str(vol["volumeName"])) > 63:
            raise HpctlError("not a valid volume name", key=f"{where}.volumeName", found=repr(vol["volumeName"]),
                             expected="a DNS label: a-z, 0-9 and '-', starting with a letter")
        out.append({"name": str(vol["volumeName"]), "mount": str(vol["mountPath"]),
                    "host_path": str(vol["hostPath"]), "claim": None})
    for i, pvc in enumerate(cluster.get("persistent_volume_claims") or []):
        if pvc is None or (isinstance(pvc, dict) and pvc.get("claimName") is None):
            continue  # HyperPod's k8s.yaml ships `- null` as the empty list
        where = f"cluster.persistent_volume_claims.{i}"
        if not isinstance(pvc, dict) or not pvc.get("mountPath") or not pvc.get("claimName"):
            raise HpctlError("a persistent volume claim needs claimName and mountPath", key=where, found=repr(pvc))
        out.append({"name": f"pvc-{i}", "mount": str(pvc["mountPath"]), "host_path": None,
                    "claim": str(pvc["claimName"])})
    names = [v["name"] for v in out]
    clash = sorted({n for n in names if names.count(n) > 1 or n in RESERVED_VOLUMES})
    if clash:
        raise HpctlError("volume names must be unique and not hpctl's own", key="cluster.volumes",
                         found=", ".join(clash), expected=f"names other than {', '.join(RESERVED_VOLUMES)}")
    return out


def _env(spec: Spec, secrets: dict[str, str], devices: int, gpu: bool) -> list[dict[str, Any]]:
    """The job's environment (hpctl.backends.common), sorted by name, plus the visible devices
    HyperPod's pods get. Secrets are references to their key in the job's Secret; secrets elsewhere
    in the spec (git.token) reach the pods as HPCTL_SECRET_<PATH>. Torchrun's rank prefix is set
    last, as on Slurm, so a user's value cannot break `hpctl logs --rank`; the manifest says so.
    """
    extra = {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(devices))} if gpu else {}
    env: dict[str, dict[str, Any]] = {var: {"name": var, "secret_key": var, "note": None}
                                      for var, path in secrets.items() if not path.startswith(USER_ENV_PREFIXES)}
    sources: dict[str, str] = {}
    for v in job_env(spec, extra=extra, extra_source=f"{devices} GPUs per pod"):
        env[v.name] = {"name": v.name, "secret_key": v.secret, "value": literal(v.value), "note": v.note}
        sources[v.name] = v.source
    for name, value in rank_prefix_env().items():
        note = f"hpctl's value, for `hpctl logs --rank`; {sources[name]} is ignored" if name in sources else None
        env[name] = {"name": name, "secret_key": None, "value": literal(value), "note": note}
    return [env[k] for k in sorted(env)]


def context(spec: Spec) -> dict[str, Any]:
    """Everything the template needs, converted, checked and sorted. Pure."""
    cluster = spec.cluster
    name = k8s_name(spec.job_name)
    namespace = scalar_text(cluster.get("namespace") or "default")
    if not DNS_LABEL.match(namespace) or len(namespace) > 63:
        raise HpctlError("not a valid Kubernetes namespace", key="cluster.namespace", found=repr(namespace))
    kind = job_kind(cluster)
    image = cluster.get("image") or spec.get("container")
    if not image:
        raise HpctlError("a Kubernetes job needs a container image", key="cluster.image",
                         hint="set cluster.image (or the general config's `container`) to an image "
                              "with torch and hpctl's adapter installed")
    nodes = positive_int(spec, "recipes.trainer.num_nodes", 1)
    devices = positive_int(spec, "recipes.trainer.devices", 1)
    auto = cluster.get("auto_resume") or {}
    restart = _choice(cluster.get("restartPolicy") or "Never", RESTART_POLICIES, "cluster.restartPolicy")
    if auto.get("enabled") and restart == "Never":
        restart = "OnFailure"  # HyperPod's job auto-resume works only with OnFailure
    if kind == "HyperPodPyTorchJob" and restart == "ExitCode":
        raise HpctlError("ExitCode is a PyTorchJob restart policy; a HyperPodPyTorchJob's pods take "
                         "Always, OnFailure or Never", key="cluster.restartPolicy", found=repr(restart))
    shm = cluster.get("shm_size")
    if shm is not None and not QUANTITY.match(scalar_text(shm)):
        raise HpctlError("not a Kubernetes quantity", key="cluster.shm_size", found=repr(shm), expected='e.g. "64Gi"')

    labels = _labels(cluster.get("custom_labels"), "cluster.custom_labels")
    for own in (JOB_LABEL, TAG_LABEL, SPEC_LABEL):  # hpctl's: the job name, and the tag apply adds
        if own in labels:
            raise HpctlError(f"the label '{own}' is set by hpctl (it names and finds the job)",
                             key=f"cluster.custom_labels.{own}", hint="use another label key")
    labels = dict(sorted({**labels, JOB_LABEL: name}.items()))
    job_labels = dict(labels)
    queue = "queue" if cluster.get("queue") else "queue_name"  # queue_name: HyperPod v2's spelling
    if cluster.get(queue):  # on the job only: Kueue admits the job, not its pods one by one
        job_labels = dict(sorted({**labels, QUEUE_LABEL: _label_value(cluster[queue], f"cluster.{queue}")}.items()))
    annotations = _annotations(cluster.get("annotations"), "cluster.annotations")
    max_retry = auto.get("max_restarts") if auto.get("enabled") else None
    if auto.get("enabled"):
        annotations[AUTO_RESUME] = "true"
        if max_retry is not None:
            annotations[MAX_RETRY] = scalar_text(max_retry)

    resources = {}
    gpu = uses_gpus(spec.data)
    if gpu:
        resources["nvidia.com/gpu"] = str(devices)
    if (cluster.get("efa_per_node") or 0) > 0:
        resources["vpc.amazonaws.com/efa"] = str(cluster["efa_per_node"])

    secrets = secret_vars(spec)
    env = _env(spec, secrets, devices, gpu)
    from adapter.tracking import JOB_ID_VAR
    if not any(e["name"] == JOB_ID_VAR for e in env):  # the trainer tags its MLflow / W&B run with it
        env = sorted(env + [{"name": JOB_ID_VAR, "secret_key": None, "value": f"{namespace}/{name}",
                             "note": "the job id hpctl records (tracking tags name it)"}], key=lambda e: e["name"])
    spec_path = f"{CONFIG_DIR}/{SPEC_FILE}"
    if kind == "PyTorchJob":
        python = cluster.get("python")
        launcher = [literal(scalar_text(python)), "-m", "torch.distributed.run"] if python else ["torchrun"]
        command = launcher + [
            "--nnodes", str(nodes), "--nproc-per-node", str(devices), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", "$(MASTER_ADDR):$(MASTER_PORT)", "--rdzv-id", name, TEE_ALL]
    else:  # HyperPod's launcher replaces torchrun (and takes its arguments); the operator runs the rendezvous
        command = ["hyperpodrun", f"--nnodes={nodes}", f"--nproc-per-node={devices}", "--rdzv-backend=hyperpod",
                   TEE_ALL]
    entry = entry_point(spec, spec.get("recipes.run.results_dir"))
    command += [literal(a) for a in entry.argv(spec_path)]
    if entry.pythonpath:  # the program imports from the clone: it comes first
        user = next((e for e in env if e["name"] == "PYTHONPATH"), None)
        if user is not None and user["secret_key"]:
            raise HpctlError("PYTHONPATH cannot be a secret when git puts the clone on it", key="env_vars.PYTHONPATH")
        value = literal(entry.pythonpath) + (":" + user["value"] if user and user["value"] else "")
        env = sorted([e for e in env if e["name"] != "PYTHONPATH"]
                     + [{"name": "PYTHONPATH", "secret_key": None, "value": value,
                         "note": "the cloned code first (git.entry_module or git.update_adapter)"}],
                     key=lambda e: e["name"])

    public = spec.public_data()
    return {
        "name": name, "namespace": namespace, "kind": kind,
        "api_version": "/".join(KINDS[kind][:2]),
        "config_name": f"{name}-spec", "secret_name": f"{name}-secrets",
        # ASCII-only JSON has no YAML line breaks or control characters, so the literal block
        # below it in the template holds it byte for byte.
        "spec_json": json.dumps(public, sort_keys=True, indent=2, ensure_ascii=True, default=str),
        "labels": labels, "job_labels": job_labels, "annotations": annotations,
        "nodes": nodes, "devices": devices,
        "replicas": [("Master", 1)] + ([("Worker", nodes - 1)] if nodes > 1 else []),
        "restart_policy": restart,
        "clean_pod_policy": _choice(cluster.get("cleanPodPolicy"), CLEAN_POD_POLICIES, "cluster.cleanPodPolicy"),
        "max_retry": max_retry,
        "service_account": cluster.get("service_account_name"),
        "priority_class": cluster.get("priority_class_name"),
        "node_selector": _labels(cluster.get("node_selector"), "cluster.node_selector"),
        "affinity": _affinity(cluster.get("label_selector")),
        "image": scalar_text(image),
        "pull_policy": _choice(cluster.get("pullPolicy"), PULL_POLICIES, "cluster.pullPolicy"),
        "command": command, "env": env, "secret_keys": sorted(secrets),
        # Each pod clones the code into its own emptyDir at <results_dir>/code (no shared-filesystem race).
        "clone": None if entry.clone is None else {"command": ["sh", "-c", literal(entry.clone.script())],
                                                   "dest": entry.clone.dest, "volume": CODE_VOLUME},
        "resources": resources,
        "volumes": _volumes(cluster), "shm_size": None if shm is None else scalar_text(shm),
        "container": CONTAINER, "config_dir": CONFIG_DIR, "spec_file": SPEC_FILE,
    }


def secret_manifest(namespace: str, name: str, values: dict[str, str]) -> dict[str, Any]:
    """The Secret `submit` creates: one key per environment variable the pods read."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": f"{name}-secrets", "namespace": namespace, "labels": {JOB_LABEL: name}},
            "stringData": dict(sorted(values.items()))}


def all_documents(manifest: str) -> list[dict[str, Any]]:
    """The documents of a rendered manifest, in order."""
    from ruamel.yaml import YAML

    return [d for d in YAML(typ="safe").load_all(manifest) if d]


def check_secrets(artifact: Artifact, secrets: dict[str, str]) -> None:
    """Refuse a submit without a value for every secret the job's environment reads."""
    missing = sorted(set(artifact.env) - set(secrets))
    if missing:
        raise HpctlError("secret values missing for the job's environment", found=", ".join(missing))


def documents(manifest: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ConfigMap, job) parsed back from a rendered manifest."""
    docs = all_documents(manifest)
    by_kind = {d.get("kind"): d for d in docs}
    job = next((by_kind[k] for k in KINDS if k in by_kind), None)
    if "ConfigMap" not in by_kind or job is None:
        raise HpctlError("the Kubernetes manifest lacks its ConfigMap or job document",
                         found=", ".join(str(k) for k in by_kind))
    return by_kind["ConfigMap"], job


def job_state(obj: dict[str, Any]) -> JobStatus:
    """A job object's status.conditions as a normalised JobStatus (a RayJob's: kubernetes_ray.job_state)."""
    if obj.get("kind") == "RayJob":
        from hpctl.backends import kubernetes_ray
        return kubernetes_ray.job_state(obj)
    conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []
                  if str(c.get("status")) == "True"}
    for ctype, state in CONDITION_STATES:
        if ctype in conditions:
            cond = conditions[ctype]
            return JobStatus(state=state, exit_code=0 if state == SUCCEEDED else None, backend_state=ctype,
                             detail=cond.get("message") or cond.get("reason"))
    return JobStatus(state=PENDING, backend_state=None, detail="no job conditions yet")


def node_of(pod: dict[str, Any]) -> int | None:
    """The node index of one of the job's pods (see the module docstring)."""
    labels = pod.get("metadata", {}).get("labels") or {}
    rtype = str(labels.get("training.kubeflow.org/replica-type", "")).lower()
    index = labels.get("training.kubeflow.org/replica-index")
    if rtype in ("master", "worker") and str(index).isdigit():
        return int(index) + (1 if rtype == "worker" else 0)
    match = re.search(r"-(\d+)$", pod.get("metadata", {}).get("name", ""))
    return int(match.group(1)) if match else None


# ---- talking to the API server (the `kubernetes` client is imported only from here on) ----

def _kubernetes(module: str) -> Any:
    """kubernetes.<module> (the `kubernetes` extra), or a clear error saying how to install it."""
    return optional_import(f"kubernetes.{module}", "kubernetes", "a Kubernetes cluster")


def api_client(cluster: dict[str, Any]) -> Any:
    """An ApiClient from cluster.kubeconfig/context, else $KUBECONFIG or ~/.kube/config, else in-cluster."""
    client, config = _kubernetes("client"), _kubernetes("config")
    from kubernetes.config.config_exception import ConfigException

    context_name = cluster.get("context") or cluster.get("kube_context")  # kube_context: HyperPod v2
    explicit = cluster.get("kubeconfig")
    if explicit:
        path = os.path.expanduser(str(explicit))
        if not os.path.isfile(path):
            raise HpctlError("kubeconfig file not found", key="cluster.kubeconfig", found=path,
                             hint="point cluster.kubeconfig at an existing file, or unset it to use "
                                  "$KUBECONFIG or ~/.kube/config")
        candidates = path
    else:
        candidates = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        if any(os.path.isfile(p) for p in candidates.split(os.pathsep)):
            return config.new_client_from_config(config_file=candidates, context=context_name)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
    except ConfigException as e:
        raise HpctlError(f"cannot load the Kubernetes configuration: {e}", key="cluster.kubeconfig") from e
    raise HpctlError("no kubeconfig found and not running inside a cluster", key="cluster.kubeconfig",
                     found=candidates, hint="set cluster.kubeconfig (and cluster.context), or export KUBECONFIG")


def _status_body(error: Any) -> dict[str, Any]:
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def object_missing(error: Any) -> bool:
    """A 404 for an object of a known resource (a missing CRD answers 404 without a named object)."""
    details = _status_body(error).get("details") or {}
    return error.status == 404 and bool(details.get("name")) and details.get("kind") != "namespaces"


@contextlib.contextmanager
def api_errors(what: str, resource: str) -> Iterator[None]:
    """Turn the client's exceptions into HpctlError naming the call, status and reason."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as e:
        body = _status_body(e)
        message = body.get("message") or (e.body or "").strip() or e.reason
        hint = None
        if e.status == 404 and not body.get("details"):
            hint = (f"the API server does not serve {resource}: is its CRD (the Kubeflow training "
                    "operator, or HyperPod's training operator) installed?")
        elif e.status == 403:
            hint = "the kubeconfig's user lacks RBAC permission for this; ask the cluster admin"
        elif e.status == 409:
            hint = "it already exists: `hpctl cancel` (or destroy) the old job first"
        elif e.status == 429 or e.status >= 500:
            hint = "the API server is overloaded or failing; state is unchanged: try again shortly"
        raise HpctlError(f"Kubernetes API error while trying to {what}: {e.status} {e.reason}: {message}",
                         hint=hint) from e
    except HTTPError as e:
        raise HpctlError(f"cannot reach the Kubernetes API server to {what}: {e}") from e


def _ft_groups(meta: dict[str, Any] | None) -> int:
    """How many replica groups an artifact runs (0: not a fault-tolerant job; hpctl.backends.kubernetes_ft)."""
    return int((meta or {}).get(FT_GROUPS) or 0)


def _target(record: JobRecord) -> tuple[str, str, tuple[str, str, str]]:
    """(namespace, name, (group, version, plural)) of an applied job."""
    namespace, _, name = record.job_id.partition("/")
    kind = (record.artifact.get("meta") or {}).get("kind")
    if kind is None:  # recorded before artifacts carried their metadata
        kind = documents(record.artifact["text"])[1]["kind"]
    return namespace, name, KINDS[kind]


class KubernetesBackend(Backend):
    name = "k8s"

    def doctor(self, cluster: dict[str, Any], general: dict[str, Any]) -> list[Any]:
        from hpctl.doctor import k8s_checks
        return k8s_checks(cluster)

    def preflight(self, spec: Spec) -> list[Any]:
        if ft_launch.settings(spec) is None:
            return []
        from hpctl.backends import kubernetes_ft
        return kubernetes_ft.check(spec)  # what the replica groups' launch cannot run on

    def fault_tolerance(self, spec: Spec, ft: Any) -> tuple[str, str]:
        from hpctl.backends import kubernetes_ft
        return kubernetes_ft.lighthouse_url(spec, ft), kubernetes_ft.RESTARTED_BY

    def render(self, spec: Spec) -> Artifact:
        if uses_ray(spec.data):  # verl runs on a Ray cluster: a RayJob (kubernetes_ray)
            from hpctl.backends import kubernetes_ray
            return kubernetes_ray.render(spec)
        ft = ft_launch.settings(spec)
        if ft is not None:  # replica groups: a PyTorchJob per group and a lighthouse (kubernetes_ft)
            from hpctl.backends import kubernetes_ft
            return kubernetes_ft.render(spec, ft)
        ctx = context(spec)
        ns, name = shquote(ctx["namespace"]), shquote(ctx["name"])
        logs = {"pods": f"kubectl get pods -n {ns} -l {JOB_LABEL}={name}"}
        if ctx["kind"] == "PyTorchJob":
            logs["node0"] = f"kubectl logs -n {ns} {shquote(ctx['name'] + '-master-0')} -c {CONTAINER}"
        return Artifact(
            kind="manifest", language="yaml", text=render_template(TEMPLATE, **ctx),
            env=secret_vars(spec),
            logs=logs, results_dir=scalar_text(spec.get("recipes.run.results_dir")),
            meta={"name": ctx["name"], "namespace": ctx["namespace"], "kind": ctx["kind"]})

    def submit(self, artifact: Artifact, secrets: dict[str, str], tag: JobTag | None = None) -> str:
        if _ft_groups(artifact.meta):
            from hpctl.backends import kubernetes_ft
            return kubernetes_ft.submit(artifact, secrets, tag)
        client = _kubernetes("client")

        config_map, job = documents(artifact.text)
        if tag is not None:
            job["metadata"]["labels"] = {**(job["metadata"].get("labels") or {}),
                                         TAG_LABEL: tag.value, SPEC_LABEL: tag.spec}
        cluster = json.loads(config_map["data"][SPEC_FILE]).get("cluster") or {}
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        check_secrets(artifact, secrets)
        group, version, plural = KINDS[job["kind"]]
        with api_client(cluster) as api:
            core = client.CoreV1Api(api)
            if artifact.env:
                body = secret_manifest(namespace, name, {k: secrets[k] for k in artifact.env})
                self._create_or_replace(core.create_namespaced_secret, core.replace_namespaced_secret,
                                        namespace, body)
            self._create_or_replace(core.create_namespaced_config_map, core.replace_namespaced_config_map,
                                    namespace, config_map)
            with api_errors(f"create {job['kind']} {namespace}/{name}", f"{group}/{version} {plural}"):
                client.CustomObjectsApi(api).create_namespaced_custom_object(group, version, namespace, plural, job)
        return f"{namespace}/{name}"

    def find_tagged(self, artifact: Artifact, tag: JobTag) -> list[TaggedJob]:
        """One list call in the job's namespace, selecting the tag's label."""
        client = _kubernetes("client")

        config_map, job = documents(artifact.text)
        cluster = json.loads(config_map["data"][SPEC_FILE]).get("cluster") or {}
        namespace = job["metadata"]["namespace"]
        group, version, plural = KINDS[job["kind"]]
        with api_client(cluster) as api:
            with api_errors(f"list {plural} in {namespace} labelled {TAG_LABEL}={tag.value}",
                            f"{group}/{version} {plural}"):
                found = client.CustomObjectsApi(api).list_namespaced_custom_object(
                    group, version, namespace, plural, label_selector=f"{TAG_LABEL}={tag.value}")
        groups = _ft_groups(artifact.meta)
        if groups:  # the group jobs carry the tag: one job per name, the groups' state
            from hpctl.backends import kubernetes_ft
            return kubernetes_ft.tagged(found.get("items") or [], namespace, groups)
        items = sorted(found.get("items") or [], key=lambda o: str(o["metadata"].get("creationTimestamp") or ""))
        return [TaggedJob(f"{namespace}/{o['metadata']['name']}", job_state(o).state,
                          str((o["metadata"].get("labels") or {}).get(SPEC_LABEL) or "")) for o in items]

    @staticmethod
    def _create_or_replace(create: Any, replace: Any, namespace: str, body: dict[str, Any]) -> None:
        """Create an object; replace it when a previous apply of the same job left it behind."""
        from kubernetes.client.exceptions import ApiException

        what = f"create {body['kind']} {namespace}/{body['metadata']['name']}"
        with api_errors(what, body["kind"]):
            try:
                create(namespace, body)
            except ApiException as e:
                if e.status != 409:
                    raise
                replace(body["metadata"]["name"], namespace, body)

    def describe(self, record: JobRecord) -> JobStatus:
        client = _kubernetes("client")
        from kubernetes.client.exceptions import ApiException

        namespace, name, (group, version, plural) = _target(record)
        groups = _ft_groups(record.artifact.get("meta"))
        if groups:  # one list call for the group jobs, aggregated
            return self.describe_many([record])[record.name]
        with api_client(record.spec.get("cluster") or {}) as api:
            with api_errors(f"read {plural} {namespace}/{name}", f"{group}/{version} {plural}"):
                try:
                    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
                        group, version, namespace, plural, name)
                except ApiException as e:
                    if object_missing(e):
                        return JobStatus(state=UNKNOWN, backend_state="NotFound",
                                         detail=f"{plural} {namespace}/{name} no longer exists")
                    raise
        return job_state(obj)

    def describe_many(self, records: list[JobRecord]) -> dict[str, JobStatus]:
        """One list call per API server, namespace and job kind, however many jobs live there."""
        client = _kubernetes("client")

        groups: dict[tuple[str, str, tuple[str, str, str]], list[tuple[JobRecord, str]]] = {}
        for record in records:
            namespace, name, kind = _target(record)
            cluster = json.dumps(record.spec.get("cluster") or {}, sort_keys=True, default=str)
            groups.setdefault((cluster, namespace, kind), []).append((record, name))
        out = {}
        for (cluster, namespace, (group, version, plural)), members in groups.items():
            with api_client(json.loads(cluster)) as api:
                with api_errors(f"list {plural} in {namespace}", f"{group}/{version} {plural}"):
                    found = client.CustomObjectsApi(api).list_namespaced_custom_object(group, version, namespace,
                                                                                      plural)
            by_name = {item["metadata"]["name"]: item for item in found.get("items") or []}
            for record, name in members:
                groups = _ft_groups(record.artifact.get("meta"))
                if groups:  # replica groups: every group's job (kubernetes_ft)
                    from hpctl.backends import kubernetes_ft
                    out[record.name] = kubernetes_ft.status_of(by_name, namespace, name, groups)
                    continue
                obj = by_name.get(name)
                out[record.name] = job_state(obj) if obj is not None else JobStatus(
                    state=UNKNOWN, backend_state="NotFound", detail=f"{plural} {namespace}/{name} no longer exists")
        return out

    def logs(self, record: JobRecord, follow: bool = False, rank: int | None = None) -> Iterator[str]:
        """A PyTorchJob's pod log (node of `rank`, lines of that rank only), or a RayJob's: the
        submitter's (verl's output) without a rank, else node `rank`'s."""
        namespace, name, (_, _, plural) = _target(record)
        ray = plural == "rayjobs"
        node, selector, shown = 0, f"{JOB_LABEL}={name}", rank
        if _ft_groups(record.artifact.get("meta")):  # the group of the rank, and its rank there
            from hpctl.backends import kubernetes_ft
            selector, node, shown = kubernetes_ft.log_target(record.artifact["meta"], name, rank)
        elif rank is not None and not ray:
            devices = int(get_path(record.spec, "recipes.trainer.devices") or 1)
            nodes = int(get_path(record.spec, "recipes.trainer.num_nodes") or 1)
            if not 0 <= rank < nodes * devices:
                raise HpctlError("no such rank", found=str(rank), expected=f"0..{nodes * devices - 1}")
            node = rank // devices
        core = _kubernetes("client").CoreV1Api
        with api_client(record.spec.get("cluster") or {}) as api:
            with api_errors(f"list the pods of {namespace}/{name}", "pods"):
                pods = core(api).list_namespaced_pod(namespace, label_selector=selector,
                                                     _preload_content=False)
                items = json.loads(pods.data).get("items") or []
            if ray:
                from hpctl.backends import kubernetes_ray
                pod, container = kubernetes_ray.pod_for(items, rank)
                missing = "submitter" if rank is None else f"node {rank}"
                waiting = "the Ray cluster may still be starting"
            else:
                pod = next((p["metadata"]["name"] for p in sorted(items, key=lambda p: p["metadata"]["name"])
                            if node_of(p) == node), None)
                container, missing, waiting = CONTAINER, f"node {node}", "the job may still be pending"
            if pod is None:
                raise HpctlError(f"no {missing} pod of {namespace}/{name} yet",
                                 found=", ".join(p["metadata"]["name"] for p in items) or "no pods",
                                 hint=f"{waiting}; try `hpctl status`")
            with api_errors(f"read the log of pod {namespace}/{pod}", "pods/log"):
                response = core(api).read_namespaced_pod_log(pod, namespace, container=container, follow=follow,
                                                             _preload_content=False)
                lines = _lines(response)
                yield from lines if ray else rank_lines(lines, shown)

    def cancel(self, record: JobRecord) -> None:
        """Delete the job (its pods go with it), then its ConfigMap and Secret. Volumes are untouched."""
        client = _kubernetes("client")
        from kubernetes.client.exceptions import ApiException

        namespace, name, (group, version, plural) = _target(record)
        with api_client(record.spec.get("cluster") or {}) as api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            deletes = [
                (f"delete {plural} {namespace}/{name}", lambda: custom.delete_namespaced_custom_object(
                    group, version, namespace, plural, name, propagation_policy="Background")),
                (f"delete ConfigMap {namespace}/{name}-spec",
                 lambda: core.delete_namespaced_config_map(f"{name}-spec", namespace)),
                (f"delete Secret {namespace}/{name}-secrets",
                 lambda: core.delete_namespaced_secret(f"{name}-secrets", namespace)),
            ]
            groups = _ft_groups(record.artifact.get("meta"))
            if groups:  # every group's job, and the lighthouse (kubernetes_ft), instead of one job
                from hpctl.backends import kubernetes_ft
                deletes = kubernetes_ft.deletes(api, namespace, name, groups) + deletes[1:]
            for what, delete in deletes:
                with api_errors(what, f"{group}/{version} {plural}"):
                    try:
                        delete()
                    except ApiException as e:
                        if not object_missing(e):  # already gone is fine
                            raise


def _lines(response: Any) -> Iterator[str]:
    """Lines of a streamed HTTP body, as they arrive (follow=True keeps the stream open)."""
    pending = b""
    try:
        for chunk in response.stream(4096, decode_content=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", errors="replace")
        if pending:
            yield pending.decode("utf-8", errors="replace")
    finally:
        response.release_conn()


BACKEND = KubernetesBackend()
