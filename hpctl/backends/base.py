"""The interface every backend implements, in the spirit of TorchX's scheduler API.

`render` is pure and is all that `hpctl plan` calls; the other methods talk to the scheduler and
are used by apply, status, logs and cancel.
"""
from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from hpctl.spec import Spec

# Normalised job states shown by `hpctl status`.
PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, UNKNOWN = (
    "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "UNKNOWN")
TERMINAL = {SUCCEEDED, FAILED, CANCELLED}


@dataclass
class Artifact:
    """What a backend will submit: the main text plus the files it writes before submitting.

    `kind` names the text ("sbatch", "manifest", "command"); `language` is for syntax
    highlighting; `files` maps absolute paths to contents; `env` names environment variables the
    job needs from the submitting process (secrets: their values never enter the artifact);
    `logs` maps a log name ("stdout", "rank0", ...) to a path or path pattern.
    """

    kind: str
    text: str
    language: str = "bash"
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # env var -> spec key path of the secret
    logs: dict[str, str] = field(default_factory=dict)
    results_dir: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Artifact":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class JobRecord:
    """One applied job as kept in state."""

    name: str
    cluster: str
    backend: str
    job_id: str
    spec_digest: str
    spec: dict[str, Any]
    artifact: dict[str, Any]
    results_dir: str
    logs: dict[str, str]
    applied_at: str
    status: str = UNKNOWN

    def to_json(self) -> dict[str, Any]:
        # Shallow: asdict's deep copy of spec and artifact was half the time of saving 1,000 jobs.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "JobRecord":
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


class Backend(abc.ABC):
    """One scheduler. Adding a backend touches no other backend."""

    name: str

    @abc.abstractmethod
    def render(self, spec: Spec) -> Artifact:
        """Turn a resolved spec into the launch artifact. Pure: no I/O, no clock, no randomness."""

    @abc.abstractmethod
    def submit(self, artifact: Artifact, secrets: dict[str, str]) -> str:
        """Write the artifact's files and submit; return the scheduler's job id.

        `secrets` maps the artifact's `env` variable names to their values.
        """

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
