"""Fault tolerance (trainer.fault_tolerance, torchft replica groups) on Kubernetes.

hpctl.ft_launch owns what every backend does under fault tolerance (the lighthouse's argv, how the
nodes split into groups, the plan's line); this module is how the Kubernetes backend does it. The
one manifest holds:

  - the ConfigMap with the resolved spec, as for every Kubernetes job (templates/k8s.yaml.j2);
  - one Kubeflow `PyTorchJob` per replica group, `<job>-g<G>`: its own torchrun world over the
    group's share of the nodes (ft_launch.split), its pods with HPCTL_REPLICA_GROUP=G and
    TORCHFT_LIGHTHOUSE set, restartPolicy OnFailure and a runPolicy.backoffLimit from max_restarts, so
    a failed group is restarted alone (by the kubelet and the training operator) while the other
    groups' jobs keep running; a group whose restarts are spent ends Failed;
  - the lighthouse: a `Deployment` of one pod running `python -m adapter.lighthouse` in the job's
    image, and a `Service` `<job>-lighthouse` whose DNS name the groups reach it at.

Every object carries `app: <job>` (kubernetes.JOB_LABEL); the group jobs and their pods also carry
GROUP_LABEL, the lighthouse's ROLE_LABEL. The job id hpctl records stays `<namespace>/<job>`;
the artifact's meta says how many groups there are, so describe aggregates them (every group
Succeeded: SUCCEEDED; one Failed: FAILED, as local and Slurm end FAILED when a group gave up),
logs finds the group and node of a rank, and cancel deletes every object.

A HyperPodPyTorchJob is refused: HyperPod's operator does its own restarts and rendezvous of the
whole job, which would restart every group together.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from adapter.ft_config import GROUP_ENV, LIGHTHOUSE_ENV
from adapter.trainconfig import FaultTolerance
from hpctl import ft_launch
from hpctl.backends import kubernetes as k8s
from hpctl.backends.base import FAILED, PENDING, RUNNING, SUCCEEDED, UNKNOWN, Artifact, JobStatus, TaggedJob
from hpctl.backends.common import JobTag, scalar_text, secret_vars
from hpctl.errors import HpctlError
from hpctl.spec import Spec
from hpctl.templating import render as render_template
from hpctl.templating import shquote

if TYPE_CHECKING:
    from hpctl.checks import Check

TEMPLATE = "k8s_ft.yaml.j2"
GROUP_LABEL = "hpctl/replica-group"  # on each group's job and pods: logs selects a group's pods by it
ROLE_LABEL = "hpctl/role"  # "lighthouse" on the Deployment's pods: the Service selects them by it
LIGHTHOUSE = "lighthouse"
GROUP_NODES, GROUP_DEVICES = "group_nodes", "group_devices"  # Artifact.meta keys, beside kubernetes.FT_GROUPS
RESTARTED_BY = ("the kubelet under its own PyTorchJob's restartPolicy OnFailure, counted against its "
                "runPolicy.backoffLimit")


def check(spec: Spec) -> list["Check"]:
    """The Kubernetes launch's own refusal (KubernetesBackend.preflight asks): a HyperPodPyTorchJob. (The
    cluster's restartPolicy gives way to OnFailure: the built-in cluster file says Never.)"""
    from hpctl.checks import ERROR, Check
    try:
        kind = k8s.job_kind(spec.cluster)
    except HpctlError:
        return []  # an unknown job_kind: rendering refuses it at its key
    if kind == "HyperPodPyTorchJob":
        key = "cluster.job_kind" if spec.cluster.get("job_kind") else "cluster.use_hyperpod_pytorch_job"
        return [Check("fault-tolerance", ERROR, "fault tolerance runs one PyTorchJob per replica group; a "
                      "HyperPodPyTorchJob is one job whose operator restarts and re-rendezvouses all its pods "
                      "together, which would restart every group at once", [key, f"{ft_launch.KEY}.enabled"],
                      "use job_kind: PyTorchJob (the Kubeflow training operator), or turn fault tolerance off "
                      "(HyperPod's auto-resume remains)")]
    return []


def job_name(spec: Spec, ft: FaultTolerance) -> str:
    """The job's name, short enough for its groups' `-g<G>` suffix (pod and Service names are
    DNS labels of at most 63 characters: kubernetes.MAX_NAME leaves room for the operator's part)."""
    name = k8s.k8s_name(spec.job_name)
    room = k8s.MAX_NAME - len(f"-g{ft.replica_groups - 1}")
    if len(name) > room:
        raise HpctlError("the job name is too long for its replica groups' Kubernetes names",
                         key="recipes.run.name", origin=spec.origin("recipes.run.name"), found=repr(spec.job_name),
                         expected=f"at most {room} characters: each group's PyTorchJob is <name>-g<G>")
    return name


def group_name(name: str, group: int) -> str:
    return f"{name}-g{group}"


def service_name(name: str) -> str:
    return f"{name}-{LIGHTHOUSE}"


def _url(name: str, namespace: str, ft: FaultTolerance) -> str:
    """Where every group reaches the lighthouse: its Service's DNS name in the job's namespace."""
    return f"http://{service_name(name)}.{namespace}.svc:{ft.lighthouse_port}"


def lighthouse_url(spec: Spec, ft: FaultTolerance) -> str:
    ctx = k8s.context(spec)
    return _url(ctx["name"], ctx["namespace"], ft)


def _share(spec: Spec, ft: FaultTolerance) -> tuple[int, int]:
    nodes = int(spec.get("recipes.trainer.num_nodes") or 1)
    devices = int(spec.get("recipes.trainer.devices") or 1)
    share = ft_launch.split(ft, nodes, devices)
    assert share is not None, "ft_launch.check refuses a layout that does not split"
    return share


def _group_context(spec: Spec, ft: FaultTolerance, name: str, group: int, url: str) -> dict[str, Any]:
    """The job template's context for one group: the backend's own context of the spec with the
    group's share as its nodes and devices (so replicas, torchrun's arguments, GPU requests and
    CUDA_VISIBLE_DEVICES follow), then the group's name, labels, environment and restart policy."""
    nodes, devices = _share(spec, ft)
    data = copy.deepcopy(spec.data)
    data["recipes"]["trainer"].update(num_nodes=nodes, devices=devices)
    ctx = k8s.context(dataclasses.replace(spec, data=data))
    own = group_name(name, group)
    command = list(ctx["command"])
    command[command.index("--rdzv-id") + 1] = own  # each group is its own torchrun world
    labels = dict(sorted({**ctx["labels"], GROUP_LABEL: str(group)}.items()))
    added = {GROUP_ENV: str(group), LIGHTHOUSE_ENV: url}
    env = [e for e in ctx["env"] if e["name"] not in added] + [
        {"name": var, "secret_key": None, "value": k8s.literal(value),
         "note": "hpctl's value, for fault tolerance" + ("; env_vars' is ignored"
                                                          if any(e["name"] == var for e in ctx["env"]) else "")}
        for var, value in added.items()]
    return {**ctx, "part": "job", "name": own, "command": command, "labels": labels,
            "job_labels": dict(sorted({**ctx["job_labels"], GROUP_LABEL: str(group)}.items())),
            "env": sorted(env, key=lambda e: e["name"]),
            "restart_policy": "OnFailure", "backoff_limit": backoff_limit(ft, nodes)}


def backoff_limit(ft: FaultTolerance, nodes: int) -> int:
    """The group job's runPolicy.backoffLimit: the training operator fails the job once the restarts
    of its pods' containers add up to it (not past it), and one failure of a group restarts each of
    its `nodes` pods once (torchrun on every node exits when a peer is lost); so the group is
    restarted `max_restarts` times at least, as on local and Slurm, and a failure beyond ends it."""
    return ft.max_restarts * nodes + 1


def render(spec: Spec, ft: FaultTolerance) -> Artifact:
    """The manifest: the ConfigMap, the lighthouse Deployment and Service, one PyTorchJob per group."""
    ctx = k8s.context(spec)
    name, namespace = job_name(spec, ft), ctx["namespace"]
    url = _url(name, namespace, ft)
    jobs = [render_template(k8s.TEMPLATE, **_group_context(spec, ft, name, g, url)) for g in range(ft.replica_groups)]
    python = scalar_text(spec.cluster.get("python") or "python3")  # as on Slurm: the image's interpreter
    lighthouse_labels = dict(sorted({**ctx["labels"], ROLE_LABEL: LIGHTHOUSE}.items()))
    nodes, devices = _share(spec, ft)
    text = render_template(
        TEMPLATE, config_map=render_template(k8s.TEMPLATE, **{**ctx, "part": "config"}), jobs=jobs,
        name=name, namespace=namespace, groups=ft.replica_groups, group_nodes=nodes, group_devices=devices,
        secret_name=ctx["secret_name"], secret_keys=ctx["secret_keys"], restarts=ft.max_restarts,
        service=service_name(name), labels=lighthouse_labels,
        selector={k8s.JOB_LABEL: name, ROLE_LABEL: LIGHTHOUSE}, image=ctx["image"], pull_policy=ctx["pull_policy"],
        service_account=ctx["service_account"], priority_class=ctx["priority_class"],
        node_selector=ctx["node_selector"], command=[k8s.literal(a) for a in ft_launch.lighthouse_argv(ft, python)],
        port=ft.lighthouse_port, url=url)
    ns = shquote(namespace)
    return Artifact(
        kind="manifest", language="yaml", text=text, env=secret_vars(spec),
        logs={"pods": f"kubectl get pods -n {ns} -l {k8s.JOB_LABEL}={shquote(name)}",
              "group0": f"kubectl logs -n {ns} {shquote(group_name(name, 0) + '-master-0')} -c {k8s.CONTAINER}",
              "lighthouse": f"kubectl logs -n {ns} deployment/{shquote(service_name(name))}"},
        results_dir=scalar_text(spec.get("recipes.run.results_dir")),
        meta={"name": name, "namespace": namespace, "kind": "PyTorchJob", k8s.FT_GROUPS: str(ft.replica_groups),
              GROUP_NODES: str(nodes), GROUP_DEVICES: str(devices)})


# ---- the API server ----

def submit(artifact: Artifact, secrets: dict[str, str], tag: JobTag | None) -> str:
    """Secret and ConfigMap (as every Kubernetes job), the lighthouse's Service and Deployment, then
    the group jobs, each tagged, so find_tagged finds them if apply dies half way."""
    client = k8s._kubernetes("client")

    docs = k8s.all_documents(artifact.text)
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in docs:
        by_kind[doc["kind"]].append(doc)
    (config_map,), (service,), (deployment,) = by_kind["ConfigMap"], by_kind["Service"], by_kind["Deployment"]
    jobs = by_kind["PyTorchJob"]
    for job in jobs:
        if tag is not None:
            job["metadata"]["labels"] = {**job["metadata"]["labels"], k8s.TAG_LABEL: tag.value, k8s.SPEC_LABEL: tag.spec}
    cluster = json.loads(config_map["data"][k8s.SPEC_FILE]).get("cluster") or {}
    namespace, name = artifact.meta["namespace"], artifact.meta["name"]
    k8s.check_secrets(artifact, secrets)
    group, version, plural = k8s.KINDS["PyTorchJob"]
    put = k8s.KubernetesBackend._create_or_replace
    with k8s.api_client(cluster) as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        if artifact.env:
            body = k8s.secret_manifest(namespace, name, {k: secrets[k] for k in artifact.env})
            put(core.create_namespaced_secret, core.replace_namespaced_secret, namespace, body)
        put(core.create_namespaced_config_map, core.replace_namespaced_config_map, namespace, config_map)
        # a leftover Service is patched, not replaced: a replace would have to repeat its allocated clusterIP
        put(core.create_namespaced_service, core.patch_namespaced_service, namespace, service)
        put(apps.create_namespaced_deployment, apps.replace_namespaced_deployment, namespace, deployment)
        custom = client.CustomObjectsApi(api)
        for job in jobs:
            with k8s.api_errors(f"create PyTorchJob {namespace}/{job['metadata']['name']}", f"{group}/{version} {plural}"):
                custom.create_namespaced_custom_object(group, version, namespace, plural, job)
    return f"{namespace}/{name}"


def aggregate(groups: list[dict[str, Any] | None], namespace: str, name: str) -> JobStatus:
    """The job's state from its group jobs' (None: that group's job is gone): SUCCEEDED when every
    group succeeded, FAILED when one failed (its restarts spent), else RUNNING while one runs."""
    states = [None if obj is None else k8s.job_state(obj) for obj in groups]
    n = len(states)
    backend = ",".join("NotFound" if s is None else (s.backend_state or "-") for s in states)
    gone = [g for g, s in enumerate(states) if s is None]
    if len(gone) == n:
        return JobStatus(state=UNKNOWN, backend_state="NotFound",
                         detail=f"the PyTorchJobs of {namespace}/{name}'s {n} replica groups no longer exist")
    failed = [g for g, s in enumerate(states) if s is not None and s.state == FAILED]
    count = {state: sum(1 for s in states if s is not None and s.state == state) for state in (RUNNING, SUCCEEDED)}
    tally = ", ".join(f"{k}/{n} groups {word}" for word, k in (("running", count[RUNNING]), ("succeeded", count[SUCCEEDED]))
                      if k or word == "running")
    if failed:
        g = failed[0]
        return JobStatus(state=FAILED, backend_state=backend,
                         detail=f"replica group {g} failed after its restarts: {states[g].detail}; {tally}")  # type: ignore[union-attr]
    if gone:
        return JobStatus(state=UNKNOWN, backend_state=backend,
                         detail=f"the PyTorchJob of replica group {gone[0]} no longer exists; {tally}")
    if count[SUCCEEDED] == n:
        return JobStatus(state=SUCCEEDED, exit_code=0, backend_state=backend, detail=f"{n}/{n} groups succeeded")
    return JobStatus(state=RUNNING if count[RUNNING] else PENDING, backend_state=backend, detail=tally)


def status_of(by_name: dict[str, dict[str, Any]], namespace: str, name: str, groups: int) -> JobStatus:
    return aggregate([by_name.get(group_name(name, g)) for g in range(groups)], namespace, name)


def tagged(items: list[dict[str, Any]], namespace: str, groups: int) -> list[TaggedJob]:
    """find_tagged's answer from the group jobs carrying the tag: one job per name (JOB_LABEL),
    oldest first, with the groups' aggregated state."""
    by_job: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for item in items:
        by_job[str((item["metadata"].get("labels") or {}).get(k8s.JOB_LABEL))][item["metadata"]["name"]] = item
    out = []
    for name, members in sorted(by_job.items(), key=lambda kv: min(
            str(o["metadata"].get("creationTimestamp") or "") for o in kv[1].values())):
        spec = next((str(o["metadata"]["labels"].get(k8s.SPEC_LABEL) or "") for o in members.values()), "")
        out.append(TaggedJob(f"{namespace}/{name}", status_of(members, namespace, name, groups).state, spec))
    return out


def log_target(meta: dict[str, Any], name: str, rank: int | None) -> tuple[str, int, int | None]:
    """(pod label selector, node within the group, rank within the group) of `hpctl logs --rank`:
    global rank r is in group r // group_world (each group is its own torchrun world, whose ranks
    are 0..group_world-1); without a rank, group 0's first node, every line."""
    groups, nodes, devices = k8s._ft_groups(meta), int(meta[GROUP_NODES]), int(meta[GROUP_DEVICES])
    world = nodes * devices
    if rank is None:
        return f"{k8s.JOB_LABEL}={name},{GROUP_LABEL}=0", 0, None
    if not 0 <= rank < groups * world:
        raise HpctlError("no such rank", found=str(rank), expected=f"0..{groups * world - 1}")
    local = rank % world
    return f"{k8s.JOB_LABEL}={name},{GROUP_LABEL}={rank // world}", local // devices, local


def deletes(api: Any, namespace: str, name: str, groups: int) -> list[tuple[str, Any]]:
    """What cancel deletes besides the ConfigMap and Secret: every group job (its pods go with it),
    the lighthouse's Deployment and Service."""
    client = k8s._kubernetes("client")
    custom, core, apps = client.CustomObjectsApi(api), client.CoreV1Api(api), client.AppsV1Api(api)
    group, version, plural = k8s.KINDS["PyTorchJob"]
    out: list[tuple[str, Any]] = [
        (f"delete {plural} {namespace}/{group_name(name, g)}",
         lambda job=group_name(name, g): custom.delete_namespaced_custom_object(
             group, version, namespace, plural, job, propagation_policy="Background"))
        for g in range(groups)]
    service = service_name(name)
    return out + [
        (f"delete Deployment {namespace}/{service}",
         lambda: apps.delete_namespaced_deployment(service, namespace, propagation_policy="Background")),
        (f"delete Service {namespace}/{service}", lambda: core.delete_namespaced_service(service, namespace)),
    ]
