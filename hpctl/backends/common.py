"""What every backend shares: the job's environment and secrets, positive-int checks, the last
metrics line, and log reading, following and rank filtering.

The job environment is built here once, for every backend, in this order (a later value wins):
1. the network defaults HyperPod's launcher sets when nodes have EFA (`FI_PROVIDER=efa`, NCCL's
   socket interfaces and error handling, GPUDirect RDMA where the instance has it), unless the
   platform provides them itself (SageMaker);
2. defaults a backend adds (Kubernetes: the visible devices);
3. the general config's `env_vars`, then the cluster's `env`: the user's values win, and an
   entry that replaces a default says so, so the plan shows it. A null value removes a default.

Secrets never enter an artifact: a secret variable (a sensitive name, or a value taken from a
sensitive environment variable) is rendered as a reference to `HPCTL_SECRET_<PATH>`, which the
backend fills from the submitting process at apply time (Slurm: `--export=ALL`; Kubernetes: a
Secret; local: the launch script's environment). Spec secrets outside the environment
(`git.token`) reach the job under that name too. Pure and torch-free.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapter.digest import digest
from adapter.keypath import join
from adapter.numbers import positive_int as count
from adapter.rank_prefix import RANK_PREFIX
from adapter.secret import secret_env_name
from hpctl import instances
from hpctl.errors import HpctlError
from hpctl.spec import Spec

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
USER_ENV = ("env_vars", "cluster.env")  # in order: the cluster's env wins
USER_ENV_PREFIXES = tuple(base + "." for base in USER_ENV)
EFA_KEY = "cluster.efa_per_node"
# What HyperPod's launcher exports for multi-node jobs (launcher/nemo/stages.py, set_multinode_envs),
# after FI_PROVIDER=efa; see https://github.com/aws/aws-ofi-nccl/blob/master/doc/efa-env-var.md.
NCCL_ENV = {
    "NCCL_SOCKET_IFNAME": "^lo,docker0,veth_def_agent",
    "NCCL_IGNORE_DISABLED_P2P": "1",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "TORCH_DIST_INIT_BARRIER": "1",
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
}
RDMA_ENV = {"FI_EFA_USE_DEVICE_RDMA": "1"}  # libfabric's EFA provider: GPUDirect RDMA on


@dataclass(frozen=True)
class EnvVar:
    """One variable of the job's environment.

    `value` is the text to set ("" for a secret); `secret` names the HPCTL_SECRET_* variable that
    carries a secret's value; `source` is where it comes from (a key path, or the default's
    origin); `replaces` describes the default it overrides, for the plan.
    """

    name: str
    value: str
    source: str
    secret: str | None = None
    replaces: str | None = None

    @property
    def note(self) -> str | None:
        return f"{self.source} overrides {self.replaces}" if self.replaces else None


def scalar_text(value: Any) -> str:
    """A config scalar as the text a job or a cluster reads (environment values, Kubernetes labels
    and annotations): booleans as YAML's true/false rather than Python's True/False, which a shell
    test or Kubernetes would not take for a boolean; numbers as written; unset (None) as ''."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def env_text(value: Any, key: str) -> str:
    """A config value as an environment value: a scalar's text; a mapping or list is an error at `key`."""
    if isinstance(value, (dict, list)):
        raise HpctlError("an environment variable needs a scalar value", key=key, found=repr(value))
    return scalar_text(value)


def positive_int(spec: Spec, path: str, default: int) -> int:
    """An integer >= 1 at `path` (default when unset); anything else is a located error."""
    value = spec.get(path)
    if value is None:
        return default
    number = count(value) if isinstance(value, int) else None  # 8.0 is not written as a count
    if number is None:
        raise HpctlError("expected a positive integer", key=path, expected="integer >= 1", found=repr(value))
    return number


def secret_vars(spec: Spec) -> dict[str, str]:
    """{HPCTL_SECRET_<PATH>: spec key path} of every secret: `Artifact.env` for every backend."""
    secrets = spec.secrets()
    out = {secret_env_name(path): path for path in sorted(secrets)}
    if len(out) != len(secrets):
        raise HpctlError("two secret keys map to the same environment variable", found=", ".join(sorted(secrets)))
    return out


MIN_CHECKED_SECRET = 8  # shorter values ("true", "1") would match ordinary text


def check_no_secrets(spec: Spec, texts: Iterable[str]) -> None:
    """Refuse to go on when a secret's value appears in rendered text: a secret placed where a
    backend cannot use a reference (an image name, a label) must not reach an artifact."""
    texts = list(texts)
    for path, value in sorted(spec.secrets().items()):
        if len(value) >= MIN_CHECKED_SECRET and any(value in text for text in texts):
            raise HpctlError("a secret would be written into the launch artifact", key=path,
                             hint="pass secrets through env_vars (or the cluster's env) only: the job "
                                  "receives them from the environment at apply time")


def network_env(spec: Spec) -> tuple[dict[str, str], str]:
    """(the EFA/NCCL defaults for this job's nodes, where they come from); empty without EFA."""
    efa = spec.get(EFA_KEY)
    if isinstance(efa, bool) or not isinstance(efa, int) or efa < 1:
        return {}, ""
    name = spec.get("instance_type")
    instance = instances.lookup(name) if isinstance(name, str) else None
    env = {"FI_PROVIDER": "efa"}
    if instance is not None and instance.gpudirect_rdma:
        env.update(RDMA_ENV)
    env.update(NCCL_ENV)
    return env, f"instance type {instance.name}" if instance else EFA_KEY


def job_env(spec: Spec, platform_network: bool = False,
            extra: dict[str, str] | None = None, extra_source: str = "") -> list[EnvVar]:
    """The job's environment, in order of first appearance (see the module docstring).

    `platform_network`: the platform sets the EFA/NCCL environment itself (SageMaker), so hpctl
    adds none. `extra`: a backend's own defaults, attributed to `extra_source`.
    """
    defaults: dict[str, tuple[str, str]] = {}
    if not platform_network:
        env, source = network_env(spec)
        defaults.update({k: (v, source) for k, v in env.items()})
    defaults.update({k: (v, extra_source) for k, v in (extra or {}).items()})
    out: dict[str, EnvVar] = {k: EnvVar(k, v, source) for k, (v, source) in defaults.items()}
    secrets = spec.secrets()
    for base in USER_ENV:
        mapping = spec.get(base) or {}
        if not isinstance(mapping, dict):
            raise HpctlError("expected a mapping of environment variables", key=base, found=repr(mapping))
        for name, value in mapping.items():
            key = join(base, name)
            name = str(name)
            if not ENV_NAME.match(name):
                raise HpctlError("not a valid environment variable name", key=key, found=repr(name),
                                 expected="letters, digits and _ (not starting with a digit)")
            previous = out.get(name)
            replaces = previous.replaces if previous else None
            if name in defaults and replaces is None:
                replaces = f"the default {defaults[name][0]!r} from {defaults[name][1]}"
            if value is None:
                out.pop(name, None)  # unset: removes a default too
                continue
            if key in secrets:
                out[name] = EnvVar(name, "", key, secret=secret_env_name(key), replaces=replaces)
            else:
                out[name] = EnvVar(name, env_text(value, key), key, replaces=replaces)
    return list(out.values())


def network_summary(spec: Spec, platform_network: bool = False) -> str | None:
    """One plan line: the node's facts from the catalogue and what the job's network setup is."""
    name = spec.get("instance_type")
    instance = instances.lookup(name) if isinstance(name, str) else None
    head = instance.describe() if instance else None
    if platform_network:
        tail = "the platform provides EFA and its NCCL environment; hpctl sets none"
    else:
        env, _ = network_env(spec)
        if not env:
            return head
        overridden = sorted(v.name for v in job_env(spec) if v.replaces)
        gone = sorted(set(env) - {v.name for v in job_env(spec)})
        tail = f"EFA/NCCL environment set ({len(env)} variables" + \
            (f"; overridden: {', '.join(overridden)}" if overridden else "") + \
            (f"; removed: {', '.join(gone)}" if gone else "") + ")"
    return f"{head}; {tail}" if head else tail


# ---- the tag every submitted job carries, so a job whose apply died before state was written is found ----

TAG_PREFIX = "hpctl-"
TAG_DIGITS = 24  # of sha256(lineage, job): 96 bits, so two workspaces' jobs never share a tag
SPEC_DIGITS = 12  # of the spec's digest: enough to tell whether an adopted job ran the planned spec


@dataclass(frozen=True)
class JobTag:
    """What a backend writes where its scheduler keeps it (Slurm's --comment, Kubernetes labels,
    SageMaker tags, the local process's environment). `value` names (state lineage, job name)
    and is a valid value in all four places (at most 63 of [a-z0-9-]); `spec` is the start of the
    submitted spec's digest, so an adopted job can be compared with the plan."""

    value: str
    spec: str

    @property
    def comment(self) -> str:
        """Both in one string, for schedulers that keep one free-text field (Slurm's comment)."""
        return f"{self.value} spec={self.spec}"

    @classmethod
    def from_comment(cls, text: str) -> "JobTag | None":
        value, _, spec = text.strip().partition(" spec=")
        return cls(value, spec) if value.startswith(TAG_PREFIX) else None


def job_tag(lineage: str, job: str, public_spec: dict[str, Any]) -> JobTag:
    """The tag of job `job` of the state of `lineage`, submitted with `public_spec`. The one owner
    of the tag's form: apply tags with it, the backends search with it."""
    if not lineage:
        raise ValueError("a job is tagged only once its state has a lineage")
    value = hashlib.sha256(f"{lineage}\0{job}".encode()).hexdigest()[:TAG_DIGITS]
    return JobTag(TAG_PREFIX + value, spec_tag(public_spec))


def spec_tag(public_spec: dict[str, Any]) -> str:
    """The spec part of a tag: the first SPEC_DIGITS hex digits of the spec's digest."""
    return digest(public_spec).split(":", 1)[1][:SPEC_DIGITS]


# ---- scheduler-side helpers shared by the backends' status and logs ----


def last_metrics(results_dir: str) -> dict[str, Any] | None:
    """The last complete JSON line of `<results_dir>/metrics.jsonl`, read from the end."""
    path = Path(results_dir, "metrics.jsonl")
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


def rank_lines(lines: Iterable[str], rank: int | None) -> Iterator[str]:
    """One rank's lines (its prefix removed), or every line when rank is None."""
    if rank is None:
        yield from lines
        return
    prefix = RANK_PREFIX.format(rank=rank)
    for line in lines:
        if line.startswith(prefix):
            yield line[len(prefix):]


def read_lines(paths: list[Path]) -> Iterator[str]:
    """The lines of the files that exist, one file after the other."""
    for path in paths:
        if path.exists():
            with path.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    yield line.rstrip("\n")


def follow_lines(paths: list[Path], finished: Callable[[], bool], poll_s: float = 0.5,
                 check_every_s: float = 2.0) -> Iterator[str]:
    """Tail the files (missing ones are waited for) until the job is finished and nothing more arrives.

    Scripts open their logs in append mode, so after a requeue the same files grow again: the
    job is not finished meanwhile, and following simply continues.
    """
    offsets = dict.fromkeys(paths, 0)
    partial = dict.fromkeys(paths, "")
    last_check = 0.0
    done = False
    while True:
        grew = False
        for path in paths:
            try:
                with path.open(encoding="utf-8", errors="replace") as f:
                    f.seek(offsets[path])
                    chunk = f.read()
                    offsets[path] = f.tell()
            except OSError:
                continue
            if chunk:
                grew = True
                *complete, partial[path] = (partial[path] + chunk).split("\n")
                yield from complete
        if done and not grew:
            for path in paths:
                if partial[path]:
                    yield partial[path]
            return
        if not grew:
            now = time.monotonic()
            if now - last_check >= check_every_s:
                last_check = now
                done = finished()  # read once more after this before stopping
            time.sleep(poll_s)


def log_lines(paths: list[Path], follow: bool, finished: Callable[[], bool], rank: int | None) -> Iterator[str]:
    """A job's log lines, read or followed, filtered to one rank when asked."""
    if not follow and not any(p.exists() for p in paths):
        raise HpctlError(f"no log yet at {paths[0]}", hint="the job may still be pending; "
                         "`hpctl logs -f` waits for it")
    return rank_lines(follow_lines(paths, finished) if follow else read_lines(paths), rank)
