"""Pre-flight checks: what the schema cannot see because it spans several keys or the machine.

Each check is a pure function `(spec, host) -> list[Check]` registered in CHECKS; it returns nothing
when all is well (the memory check always reports its estimate). Every Check names the key paths
involved, most relevant first, so the CLI can point at file:line through the spec's provenance.
Only the local cluster looks at the machine, through HostInfo, which is detected without torch.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from adapter import evalspec
from adapter.numbers import positive_int
from hpctl import ft_launch, instances, memory, model_arch, standin
from hpctl.devices import devices_per_node, uses_gpus
from hpctl.engines import engine_of
from hpctl.entry import runs_adapter
from hpctl.errors import Problem
from hpctl.spec import Spec
from hpctl.suggest import did_you_mean

ERROR, WARNING, INFO = "error", "warning", "info"

NODES = "recipes.trainer.num_nodes"
DEVICES = "recipes.trainer.devices"
NPROC = "cluster.nproc_per_node"
TP = "recipes.model.tensor_model_parallel_degree"
SHARD = "recipes.model.shard_degree"
MICRO = "recipes.model.train_batch_size"
SEQ = "recipes.model.max_context_width"
DEVICE_MEMORY = "cluster.device_memory_gb"
DEVICES_PER_NODE = "cluster.devices_per_node"
ACCELERATOR = "recipes.trainer.accelerator"
INSTANCE = "instance_type"


@dataclass(frozen=True)
class Check:
    id: str
    severity: str  # "error" | "warning" | "info"
    message: str
    keys: list[str] = field(default_factory=list)
    hint: str | None = None


@dataclass(frozen=True)
class HostInfo:
    """The machine a local job runs on."""

    cpu_count: int
    gpu_count: int
    memory_gb: float | None
    gpu_memory_gb: float | None = None  # the smallest GPU's memory


def detect_host() -> HostInfo:
    """CPUs this process may use, GPUs from nvidia-smi (when on PATH) and memory from /proc/meminfo."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    gpu_mib: list[float] = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=15, check=True).stdout
            gpu_mib = [float(line) for line in out.split() if line.strip()]
        except (OSError, subprocess.SubprocessError, ValueError):
            gpu_mib = []
    return HostInfo(cpu_count=cpus, gpu_count=len(gpu_mib), memory_gb=_meminfo_gb(),
                    gpu_memory_gb=min(gpu_mib) * 2**20 / 1e9 if gpu_mib else None)


def _meminfo_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        return None
    return None


def _num(spec: Spec, path: str) -> int | None:
    """A positive integer at `path`, or None when unset or not one (the schema reports bad types)."""
    return positive_int(spec.get(path))


def _host_gpus(host: HostInfo | None) -> int | None:
    return host.gpu_count if host is not None else None


def _present(spec: Spec, keys: list[str]) -> list[str]:
    """The keys that hold a value in this spec (unset optional keys would only add noise)."""
    return [k for k in keys if spec.get(k) is not None]


def _is_local(spec: Spec) -> bool:
    return (spec.get("cluster.type") or spec.cluster_type) == "local"


def _devices_key(spec: Spec) -> str:
    """Where the processes per node come from: a local cluster's nproc_per_node, else the recipe."""
    return NPROC if _is_local(spec) and _num(spec, NPROC) else DEVICES


def _world(spec: Spec) -> tuple[int, str]:
    """(world size, a text showing how it was computed)."""
    nodes = _num(spec, NODES) or 1
    per_node = devices_per_node(spec.data)
    return nodes * per_node, f"{NODES.rsplit('.', 1)[1]} {nodes} x {_devices_key(spec).rsplit('.', 1)[1]} {per_node}"


def check_host_capacity(spec: Spec, host: HostInfo | None) -> list[Check]:
    """Enough devices per node: the local machine's CPUs or GPUs, or the cluster's devices_per_node."""
    per_node = devices_per_node(spec.data)
    devices_key = _devices_key(spec)
    gpu = uses_gpus(spec.data, _host_gpus(host))
    if _is_local(spec):
        nodes = _num(spec, NODES) or 1
        if nodes > 1:
            return [Check("host-capacity", ERROR,
                          f"num_nodes is {nodes}, but a local cluster runs every process on this one machine",
                          [NODES])]
        configured = _num(spec, DEVICES_PER_NODE)
        if configured is not None:
            available, source, keys = configured, "cluster.devices_per_node", [devices_key, DEVICES_PER_NODE]
        elif host is None:
            return []
        else:
            available = host.gpu_count if gpu else host.cpu_count
            source, keys = ("GPUs listed by nvidia-smi" if gpu else "CPUs usable here"), [devices_key, ACCELERATOR]
        if per_node <= available:
            return []
        if gpu:
            return [Check("host-capacity", ERROR,
                          f"the job starts {per_node} GPU processes but this machine has {available} ({source})",
                          keys)]
        return [Check("host-capacity", WARNING,
                      f"the job starts {per_node} processes on {available} CPUs ({source}): "
                      "they will share cores and run slowly", keys)]
    available = _num(spec, DEVICES_PER_NODE)
    if available is None:
        return [Check("host-capacity", INFO,
                      "cluster.devices_per_node is not set, so the devices per node cannot be checked",
                      [DEVICES_PER_NODE, devices_key])]
    if per_node <= available:
        return []
    return [Check("host-capacity", ERROR,
                  f"trainer.devices is {per_node} but the cluster's nodes have {available} devices "
                  f"(cluster.devices_per_node{_derived(spec, DEVICES_PER_NODE)})", [devices_key, DEVICES_PER_NODE])]


def _derived(spec: Spec, path: str) -> str:
    """', from instance type NAME' when hpctl filled the value from the instance type."""
    origin = spec.origin(path)
    return f", {origin.via}" if origin is not None and origin.via else ""


def device_memory_gb(spec: Spec, host: HostInfo | None) -> tuple[float | None, str]:
    """Memory one process may use, and where that number came from.

    cluster.device_memory_gb when set; on a local cluster otherwise the GPU's memory, or for CPU
    jobs the host's memory shared by the processes started on it."""
    value = spec.get(DEVICE_MEMORY)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value), DEVICE_MEMORY
    if not _is_local(spec) or host is None:
        return None, ""
    if not uses_gpus(spec.data, host.gpu_count):
        if host.memory_gb is None:
            return None, ""
        procs = devices_per_node(spec.data)
        return host.memory_gb / procs, f"host memory {host.memory_gb:.1f} GB / {procs} processes"
    return host.gpu_memory_gb, "GPU memory found by nvidia-smi" if host.gpu_memory_gb else ""


def memory_estimate(spec: Spec, host: HostInfo | None = None) -> memory.MemoryEstimate:
    """The estimate against the device memory this spec runs on (detected for local clusters)."""
    if host is None and _is_local(spec):
        host = detect_host()
    return memory.estimate(spec.data, device_memory_gb(spec, host)[0], _host_gpus(host))


def check_memory(spec: Spec, host: HostInfo | None) -> list[Check]:
    if engine_of(spec.data):  # an engine's memory is its own (check_engine)
        return []
    available, source = device_memory_gb(spec, host)
    est = memory.estimate(spec.data, available, _host_gpus(host))
    keys = _present(spec, [MICRO, SEQ, "recipes.model.activation_checkpointing", SHARD, TP])
    if source == DEVICE_MEMORY:
        keys.append(DEVICE_MEMORY)
    if est.fraction is None:
        unknown = " (device memory unknown: set cluster.device_memory_gb)" if est.known else ""
        return [Check("memory", INFO, f"memory estimate {est.explain}{unknown}", keys)]
    fix = ("; lower train_batch_size or max_context_width, turn on activation_checkpointing, "
           "or shard further (shard_degree, tensor_model_parallel_degree)")
    derived = _derived(spec, DEVICE_MEMORY) if source == DEVICE_MEMORY else ""
    if est.fraction > 1.0:
        # Memory hpctl took from the instance catalogue (not asserted by the user) only warns: the
        # estimate models hpctl's own trainer, and four of HyperPod's p5 recipes exceed it (see README).
        return [Check("memory", WARNING if derived else ERROR, f"the job needs more memory than the device has "
                      f"({source}{derived}): {est.explain}{fix}", keys)]
    if est.fraction > 0.9:
        return [Check("memory", WARNING, f"the job needs over 90% of the device's memory ({source}): "
                      f"{est.explain}", keys)]
    return [Check("memory", INFO, f"memory estimate {est.explain}", keys)]


def _instance(spec: Spec) -> instances.Instance | None:
    name = spec.get(INSTANCE)
    return instances.lookup(name) if isinstance(name, str) and name.strip() else None


def check_instance_type(spec: Spec, host: HostInfo | None) -> list[Check]:
    """An instance_type must be in the catalogue (the backends and checks read its facts)."""
    name = spec.get(INSTANCE)
    if name is None or (isinstance(name, str) and (not name.strip() or _instance(spec))):
        return []
    refused = instances.refusal(name) if isinstance(name, str) else None
    if refused:  # compat refuses these before this check runs; kept for specs built without compose
        return [Check("instance-type", ERROR, f"instance type {name}: {refused[1]}", [INSTANCE])]
    hint = did_you_mean(instances.bare(str(name)).lower(), instances.CATALOGUE)
    return [Check("instance-type", ERROR,
                  f"unknown instance type {name!r}: hpctl's catalogue does not know what its nodes hold"
                  + (f"; {hint}" if hint else "")
                  + f" (known: {', '.join(sorted({i.name.split('.')[0] for i in instances.CATALOGUE.values()}))}"
                  "; or leave instance_type unset and set cluster.devices_per_node and device_memory_gb)",
                  [INSTANCE])]


def check_instance_capacity(spec: Spec, host: HostInfo | None) -> list[Check]:
    """The job against the instance's real hardware, where the cluster config claims more than it has
    (when the cluster's numbers come from the instance, host-capacity and memory report it)."""
    instance = _instance(spec)
    if instance is None:
        return []
    found = []
    per_node = devices_per_node(spec.data)
    gpu = uses_gpus(spec.data, _host_gpus(host))
    if gpu and per_node > instance.devices and _num(spec, DEVICES_PER_NODE) != instance.devices:
        found.append(Check("instance-devices", ERROR,
                           f"trainer.devices is {per_node} but a {instance.name} node has {instance.devices} "
                           f"{instance.accelerator} GPUs", [_devices_key(spec), INSTANCE]))
    configured = spec.get(DEVICE_MEMORY)
    if gpu and configured != instance.device_memory_gb:
        est = memory.estimate(spec.data, float(instance.device_memory_gb), _host_gpus(host))
        if est.fraction is not None and est.fraction > 1.0:
            found.append(Check("instance-memory", ERROR,
                               f"the job needs more memory than a {instance.name} GPU has "
                               f"({instance.accelerator} {instance.device_memory_gb} GB): {est.explain}",
                               _present(spec, [MICRO, SEQ, SHARD, TP]) + [INSTANCE]))
    return found


def world_size(spec: Spec) -> int:
    """The number of processes the launcher starts: nodes x processes per node (a local cluster's
    nproc_per_node, else trainer.devices). The trainer's mesh and batch rules are asked with it."""
    return _world(spec)[0]


def check_trainer(spec: Spec, host: HostInfo | None) -> list[Check]:
    """Everything the trainer would refuse at start, asked of the trainer's own torch-free config
    (adapter.config, the one owner of those rules) with the world size this plan launches. Local
    jobs also have their model, tokenizer and data files read, since the job will see the same ones.
    A custom entry point (git.entry_script / entry_module) runs another program: it decides."""
    if not runs_adapter(spec.data):
        return []
    from adapter.config import from_recipe  # torch-free; imported here so `hpctl` starts fast
    from adapter.reader import ConfigError
    try:  # one read of the recipe: every refusal, or the config whose notes the plan states
        cfg = from_recipe(spec.recipe, world_size(spec), files=_is_local(spec))
    except ConfigError as exc:
        return [Check("trainer", ERROR, e.message, [f"recipes.{e.key}"], standin.trainer_hint(spec.data, e.hint))
                for e in exc.errors]
    note = cfg.parallel.offload_note
    return [Check("trainer", INFO, note, ["recipes.model.offload_activations"])] if note else []

def check_backend(spec: Spec, host: HostInfo | None) -> list[Check]:
    """The checks only the spec's scheduler needs (Backend.preflight: SageMaker's input channels)."""
    from hpctl.backends import MODULES, get_backend
    return get_backend(spec.cluster_type).preflight(spec) if spec.cluster_type in MODULES else []


def check_engine(spec: Spec, host: HostInfo | None) -> list[Check]:
    """An engine's own start-up rules (verl's batch rules and memory per GPU, lm-eval's tasks,
    strategy and metric), asked of the engine's module (hpctl.engines)."""
    engine = engine_of(spec.data)
    return engine.checks(spec, host) if engine else []


CHECKS: list[Callable[[Spec, HostInfo | None], list[Check]]] = [
    check_trainer,
    model_arch.check,
    check_engine,
    check_backend,
    check_host_capacity,
    check_memory,
    check_instance_type,
    check_instance_capacity,
    ft_launch.check,  # trainer.fault_tolerance: where hpctl can launch replica groups
]


# An evaluation job is one lm-eval process on whatever device the node has: the trainer's
# device, memory and world-size checks do not apply to it.
EVALUATION_CHECKS: list[Callable[[Spec, HostInfo | None], list[Check]]] = [check_engine, check_backend,
                                                                            check_instance_type]


def run_checks(spec: Spec, host: HostInfo | None = None) -> list[Check]:
    """Every check, in order. The machine is detected (no torch) only for local clusters."""
    if host is None and _is_local(spec):
        host = detect_host()
    checks = EVALUATION_CHECKS if evalspec.is_evaluation(spec.recipe) else CHECKS
    return [found for check in checks for found in check(spec, host)]


def errors_as_problems(spec: Spec, results: list[Check]) -> list[Problem]:
    """The error-severity checks as located problems: each at its first key's file:line."""
    out = []
    for c in results:
        if c.severity != ERROR:
            continue
        key = c.keys[0] if c.keys else None
        hint = c.hint or (("keys involved: " + ", ".join(c.keys)) if len(c.keys) > 1 else None)
        out.append(Problem(f"[{c.id}] {c.message}", spec.origin(key) if key else None, key, hint=hint))
    return out

