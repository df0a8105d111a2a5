"""What state keeps of an applied job, and the job states every backend maps its own onto.

State (state.py), the diff (diff.py), apply (apply.py) and the backends all speak of these; they
live here, apart from any one of them, so none has to import another for its vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapter.digest import digest

# Normalised job states shown by `hpctl status`.
PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, UNKNOWN = (
    "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "UNKNOWN")
TERMINAL = {SUCCEEDED, FAILED, CANCELLED}


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

    def observe(self, state: str) -> bool:
        """Keep a status the scheduler reported; True when it changed. UNKNOWN (the scheduler did
        not answer) is not an observation: the last known status stays."""
        if state == UNKNOWN or state == self.status:
            return False
        self.status = state
        return True

    def identity(self) -> dict[str, Any]:
        """What names this application of the job: a saved plan is stale when it changed (the job
        was applied again, or forgotten), not when only its last observed status did."""
        return {"job_id": self.job_id, "spec_digest": self.spec_digest, "applied_at": self.applied_at,
                "cluster": self.cluster}


def record_digest(record: JobRecord | None) -> str | None:
    """What a saved plan remembers of the job it changes (see JobRecord.identity)."""
    return None if record is None else digest(record.identity())
