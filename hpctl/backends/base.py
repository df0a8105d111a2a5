"""The interface every backend implements, in the spirit of TorchX's scheduler API.

`render` is pure and is all that `hpctl plan` calls; the other methods talk to the scheduler and
are used by apply, status, logs and cancel.
"""
from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hpctl.records import (CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, TERMINAL,  # noqa: F401
                            UNKNOWN, JobRecord)  # states and records are re-exported for the backends
from hpctl.spec import Spec

if TYPE_CHECKING:
    from hpctl import checks, doctor
    from hpctl.backends.common import JobTag

# What `submit` returns for an artifact with submit=False (Slurm's
# cluster.slurm_create_submission_file_only): files written, no job; apply records none.
NOT_SUBMITTED = "(not submitted)"


@dataclass
class Artifact:
    """What a backend will submit: the main text plus the files it writes before submitting.

    `kind` names the text ("sbatch", "manifest", "command"); `language` is for syntax
    highlighting; `files` maps absolute paths to contents; `env` names environment variables the
    job needs from the submitting process (secrets: their values never enter the artifact);
    `logs` maps a log name ("stdout", "rank0", ...) to a path or path pattern; `meta` holds what
    the backend needs later to find the submitted job (its name, kind, namespace), so describe,
    logs and cancel never parse the rendered text back.
    """

    kind: str
    text: str
    language: str = "bash"
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # env var -> spec key path of the secret
    logs: dict[str, str] = field(default_factory=dict)
    results_dir: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    submit: bool = True  # False: `submit` writes the files and hands nothing to the scheduler

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Artifact":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class JobStatus:
    """A job's normalised state, the scheduler's own word for it, and the trainer's progress."""

    state: str
    exit_code: int | None = None
    backend_state: str | None = None
    detail: str | None = None
    metrics: dict[str, Any] | None = None  # last line of the trainer's metrics.jsonl

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaggedJob:
    """A job the scheduler holds under an hpctl tag: its id, hpctl's state for it, and the spec
    part of its tag (common.JobTag.spec; "" when the scheduler kept none)."""

    job_id: str
    state: str
    spec: str = ""


class Backend(abc.ABC):
    """One scheduler. Adding a backend touches no other backend."""

    name: str
    platform_network = False  # the platform sets up EFA and NCCL itself (SageMaker): hpctl adds no network env
    reads_general_config = False  # its doctor checks read the general config (SageMaker's image may be there)

    @abc.abstractmethod
    def render(self, spec: Spec) -> Artifact:
        """Turn a resolved spec into the launch artifact. Pure: no I/O, no clock, no randomness."""

    @abc.abstractmethod
    def submit(self, artifact: Artifact, secrets: dict[str, str], tag: "JobTag | None" = None) -> str:
        """Write the artifact's files and submit; return the scheduler's job id, or NOT_SUBMITTED
        when the artifact says not to submit.

        `secrets` maps the artifact's `env` variable names to their values. `tag` (apply always
        gives one) goes where the scheduler keeps it, so `find_tagged` finds the job even when
        state never recorded it.
        """

    @abc.abstractmethod
    def find_tagged(self, artifact: Artifact, tag: "JobTag") -> list[TaggedJob]:
        """The jobs the scheduler still knows that carry `tag.value`, asked once, oldest first,
        each with its state (Slurm's squeue and the local process table know only jobs not yet
        ended). `artifact` (the planned one) says where to look: namespace, region. Raises
        HpctlError when the scheduler cannot be asked."""

    @abc.abstractmethod
    def describe(self, record: JobRecord) -> JobStatus:
        """The job's current status."""

    def describe_many(self, records: list[JobRecord]) -> dict[str, JobStatus]:
        """Statuses of many jobs, by record name. `hpctl status` calls this so a backend can ask
        its scheduler once for all of them; this default asks once per job."""
        return {record.name: self.describe(record) for record in records}

    @abc.abstractmethod
    def logs(self, record: JobRecord, follow: bool = False, rank: int | None = None) -> Iterator[str]:
        """Lines of the job's log (one rank's where the backend keeps per-rank files)."""

    @abc.abstractmethod
    def cancel(self, record: JobRecord) -> None:
        """Stop the job. Never deletes results, checkpoints or logs."""

    @abc.abstractmethod
    def doctor(self, cluster: dict[str, Any], general: dict[str, Any]) -> list["doctor.Check"]:
        """`hpctl doctor`: whether this machine can submit to a cluster of this type (`cluster` is
        the cluster file, `general` the general config when reads_general_config), a fix for each gap."""

    def preflight(self, spec: Spec) -> list["checks.Check"]:
        """Plan-time checks only this scheduler needs, run with hpctl's own (hpctl.checks); none by default."""
        return []

    def fault_tolerance(self, spec: Spec, ft: Any) -> tuple[str, str] | None:
        """(where the replica groups reach the lighthouse, who restarts a failed group) for the
        plan's line, when this backend launches trainer.fault_tolerance (ft: its settings); None:
        it cannot restart one group alone, and hpctl.ft_launch.check refuses the job at plan."""
        return None

    def test_only(self, artifact: Artifact) -> str:
        """Ask the scheduler whether it would accept the submission, submitting nothing (`plan
        --check`); the answer in one line. Backends whose scheduler cannot say refuse clearly."""
        from hpctl.errors import HpctlError
        raise HpctlError(f"the {self.name} backend cannot test a submission without making it",
                         hint="drop --check; plan has already validated the artifact against the scheduler's schema")
