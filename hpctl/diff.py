"""Compare a planned job with its record in state: which action, and which keys changed.

Actions follow Terraform: create (+), update (~: submit again into the same results dir, where
the trainer resumes; also an unchanged job that ended FAILED or CANCELLED), replace (-/+: the job
is still running, or moves cluster or results dir, so it is cancelled and submitted anew),
destroy (-) and no-op.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from adapter.keypath import iter_leaves
from hpctl.records import CANCELLED, FAILED, TERMINAL, JobRecord

CREATE, UPDATE, REPLACE, DESTROY, NOOP = "create", "update", "replace", "destroy", "no-op"
SYMBOL = {CREATE: "+", UPDATE: "~", REPLACE: "-/+", DESTROY: "-", NOOP: " "}
# A change to any of these cannot be carried by resubmitting into the same job.
FORCES_REPLACE = ("cluster_type", "recipes.run.results_dir")


@dataclass
class KeyChange:
    path: str
    old: Any
    new: Any
    forces_replace: bool = False


@dataclass
class Change:
    action: str
    job: str
    reason: str
    keys: list[KeyChange] = field(default_factory=list)
    artifact_changed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_ABSENT = "(absent)"


def key_changes(old: dict, new: dict) -> list[KeyChange]:
    before = dict(iter_leaves(old))
    after = dict(iter_leaves(new))
    out = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path, _ABSENT), after.get(path, _ABSENT)
        if a != b:
            out.append(KeyChange(path, a, b, any(path == k or path.startswith(k + ".") for k in FORCES_REPLACE)))
    return out


def diff(job: str, public_spec: dict, artifact_text: str, record: JobRecord | None, destroy: bool = False) -> Change:
    """The change that applying would make. `public_spec` is the redacted spec that state keeps."""
    if destroy:
        if record is None:
            return Change(NOOP, job, "the job is not in state")
        return Change(DESTROY, job, "the job will be cancelled if running and forgotten (results are kept)")
    if record is None:
        return Change(CREATE, job, "the job is not in state")
    keys = key_changes(record.spec, public_spec)
    artifact_changed = record.artifact.get("text") != artifact_text
    if not keys and not artifact_changed:
        if record.status in (FAILED, CANCELLED):  # apply brings the job back to what the inputs say
            return Change(UPDATE, job, f"the job ended {record.status}: it will be submitted again unchanged and "
                          "resume from its latest checkpoint")
        return Change(NOOP, job, "the job matches the configuration")
    running = record.status not in TERMINAL
    if any(k.forces_replace for k in keys):
        return Change(REPLACE, job, "a change forces a new job", keys, artifact_changed)
    if running:
        return Change(REPLACE, job, f"the job is {record.status}: it will be cancelled and submitted again",
                      keys, artifact_changed)
    return Change(UPDATE, job, f"the job is {record.status}: it will be submitted again and resume from its "
                  "latest checkpoint", keys, artifact_changed)
