"""Apply: the only step with side effects. It brings a job to what its plan showed and records it.

Order, as Terraform's: take the state lock, then (without a saved plan) plan under the lock, then
submit and write state, then release. So concurrent applies of different jobs in one workspace
queue on the lock (up to --lock-timeout) and all succeed; none reads a state another is about
to replace. A saved plan is stale only when the job it changes was changed since (applied again,
forgotten, or created by someone else), never because another job moved state on.

Before planning, the job's recorded status is refreshed from its scheduler (Terraform's refresh):
a job that ended FAILED or CANCELLED since it was last looked at plans as `~` resubmit, so
`hpctl apply` of unchanged inputs brings it back to running and it resumes from its checkpoint.

Every submitted job carries a tag naming (state lineage, job) (backends.common.job_tag), put where
its scheduler keeps it. When hpctl dies after the scheduler accepted a job but before state
recorded it, the next plan or apply of that job asks the scheduler for the tag (`adopt_lost`) and
records the job it finds instead of submitting a second one.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from adapter.digest import digest
from adapter.keypath import get_path
from adapter.secret import REDACTED
from hpctl.backends import get_backend
from hpctl.backends.base import NOT_SUBMITTED, Backend, JobStatus, TaggedJob
from hpctl.backends.common import job_tag
from hpctl.diff import CREATE, DESTROY, NOOP, REPLACE, UPDATE
from hpctl.errors import HpctlError, Origin
from hpctl.faults import crash_if
from hpctl.records import CANCELLED, PENDING, TERMINAL, JobRecord, record_digest
from hpctl.spec import Spec
from hpctl.state import locked

if TYPE_CHECKING:
    from hpctl.plan import Plan
    from hpctl.state import State

Say = Callable[[str], None]


def backend_of(record: JobRecord):
    """The backend that submitted a recorded job."""
    return get_backend(record.spec.get("cluster_type", record.backend))


def refresh(state: "State", job: str) -> None:
    """Ask the scheduler for the job's status and keep it in the in-memory state (written only
    by a later save). Best effort: an unreachable scheduler leaves the recorded status, with a
    warning, so planning offline still works."""
    record = state.jobs.get(job)
    if record is None or record.status in TERMINAL:
        return
    try:
        record.observe(backend_of(record).describe(record).state)
    except HpctlError as e:
        print(f"warning: could not refresh the status of {job} ({e.problems[0].message}); "
              f"using the recorded {record.status}", file=sys.stderr)


def refresh_many(state: "State", names: list[str]) -> list[tuple[JobRecord, JobStatus]]:
    """The jobs' statuses, each backend asked once for all its jobs (`hpctl status` of many jobs is
    one scheduler call per backend), kept in state like `refresh`'s and saved only when one changed.
    The caller holds the state lock."""
    records = [state.job(name) for name in names or sorted(state.jobs)]
    by_backend: dict[Backend, list[JobRecord]] = {}  # a backend is one module-level object
    for record in records:
        by_backend.setdefault(backend_of(record), []).append(record)
    statuses: dict[str, JobStatus] = {}
    for backend, group in by_backend.items():
        statuses.update(backend.describe_many(group))
    changed = False
    for record in records:
        changed = record.observe(statuses[record.name].state) or changed
    if changed:
        state.save()
    return [(record, statuses[record.name]) for record in records]


def plan_job(spec: Spec, state: "State", warn: Say, *, save_adoption: bool, destroy: bool = False,
             args: list[str] | None = None, workspace: str = "") -> "Plan":
    """Refresh the job's status from its scheduler, plan against `state`, and when a job was
    submitted but never recorded, adopt it and plan again (so the plan diffs against the job that
    runs). `save_adoption` only under the caller's state lock: `hpctl plan` reads state without
    the lock and only shows an adoption; `apply` writes it at once."""
    from hpctl.plan import build
    refresh(state, spec.job_name)
    plan = build(spec, state, destroy=destroy, args=args, workspace=workspace)
    if adopt_lost(state, plan, warn):
        if save_adoption:
            state.save()
        plan = build(spec, state, destroy=destroy, args=args, workspace=workspace)
    return plan


def apply_saved(plan: "Plan", state_path: Path, lock_timeout: float, say: Say, warn: Say) -> None:
    """Apply a saved plan as it is. Its input files are re-read only when it needs secrets (whose
    values are never saved) and must not have changed since; under the state lock a lost job is
    adopted (as plan_job does), the plan must still be fresh for its job (check_fresh), then it
    is carried out."""
    spec = None
    if plan.artifact.env:
        from hpctl.compose import compose
        from hpctl.workspace import Workspace
        spec = compose(plan.args, plan.cluster, Workspace(Path(plan.workspace)))
        if spec.inputs != plan.inputs:
            raise HpctlError("the plan is stale: its input files changed since it was made", hint="run hpctl plan again")
    with locked(state_path, lock_timeout) as state:
        if adopt_lost(state, plan, warn):
            state.save()
        check_fresh(plan, state, str(state_path))
        execute(state, plan, spec, say)


ADOPTED = "(adopted)"  # applied_at of an adopted record: when it was submitted is not known


def adopt_lost(state: "State", plan: "Plan", say: Say) -> bool:
    """Record in `state` (in memory; the caller saves) a job that an apply began to submit for
    `plan.job` (state.submitting) but died before recording: the newest job the scheduler holds
    under the job's tag when state has no record of it, or the newest live one other than the
    recorded one (an update or replace that died after submitting). True when one was adopted.

    Only a job with a submission mark is looked for, so a plan of any other job asks no scheduler,
    and a job the user forgot (`destroy`, `state rm`) is never brought back. A job whose spec
    differs from the plan's is adopted with its artifact unknown, so the plan shows the update or
    replace that brings it to the plan. Best effort: a scheduler that cannot be asked gives a
    warning, not a failure, so planning offline still works."""
    record = state.jobs.get(plan.job)
    if plan.job not in state.submitting or plan.change.action == DESTROY:
        return False
    if record is not None and record.status not in TERMINAL:
        return False
    backend = get_backend(plan.spec.get("cluster_type", plan.backend))
    tag = job_tag(state.lineage, plan.job, plan.spec)
    try:
        found = backend.find_tagged(plan.artifact, tag)
    except HpctlError as e:
        print(f"warning: could not ask the scheduler for an unrecorded job {plan.job} ({e.problems[0].message})",
              file=sys.stderr)
        return False
    if record is not None:
        found = [j for j in found if j.job_id != record.job_id and j.state not in TERMINAL]
    if not found:
        state.submitting.pop(plan.job)  # the scheduler has none: nothing was submitted
        return False
    job, same_spec = found[-1], found[-1].spec == tag.spec
    state.recorded(plan.job, adopted_record(plan, backend, job, same_spec))
    say(f"adopted job {plan.job} ({backend.name} job {job.job_id}, {job.state}) found on the scheduler but "
        "missing from state" + ("" if same_spec else "; it was submitted with another spec than this plan's"))
    return True


def adopted_record(plan: "Plan", backend: Backend, job: TaggedJob, same_spec: bool) -> JobRecord:
    """The record of an adopted job. Deterministic, so a plan saved with it applies while it
    stands (check_fresh). With another spec, the artifact's text is unknown (empty): the diff
    then shows the job changes."""
    artifact = plan.artifact.to_json()
    if not same_spec:
        artifact["text"] = ""
    return JobRecord(name=plan.job, cluster=plan.cluster, backend=backend.name, job_id=job.job_id,
                     spec_digest=digest(plan.spec) if same_spec else f"(unknown: submitted with spec {job.spec})",
                     spec=plan.spec, artifact=artifact, results_dir=plan.artifact.results_dir,
                     logs=plan.artifact.logs, applied_at=ADOPTED, status=job.state)


def check_fresh(plan: "Plan", state: "State", state_path: str) -> None:
    """A saved plan applies only to the state it was made against, and only while the job it
    changes is as it was then."""
    where = Origin(state_path)
    if plan.state_lineage and state.lineage and plan.state_lineage != state.lineage:
        raise HpctlError("the plan was made against another state file (its lineage differs)", origin=where,
                         hint="run hpctl plan again in this workspace")
    record = state.jobs.get(plan.job)
    now = record_digest(record)
    if now == plan.record_digest:
        return
    if plan.record_digest is None:
        what = f"job {plan.job} was applied since the plan was made (as {record.job_id} at {record.applied_at})"
    elif record is None:
        what = f"job {plan.job} was destroyed since the plan was made"
    else:
        what = f"job {plan.job} was applied again since the plan was made (now {record.job_id} at {record.applied_at})"
    raise HpctlError(f"the plan is stale: {what}", origin=where, hint="run hpctl plan again")


def secrets_for(plan: "Plan", spec: Spec | None) -> dict[str, str]:
    """Values for the artifact's secret env vars, from the freshly composed spec (never stored)."""
    out = {}
    for var, path in plan.artifact.env.items():
        value = get_path(spec.data, path) if spec is not None else None
        if value in (None, "", REDACTED):
            raise HpctlError(f"the secret '{path}' has no value at apply time", key=path,
                             hint="give secrets through the environment, e.g. ${oc.env:HF_TOKEN}, not on the command line")
        out[var] = str(value)
    return out


def cancel(state: "State", name: str) -> JobRecord:
    """Stop a recorded job and keep CANCELLED as its status; the caller holds the state lock."""
    record = state.job(name)
    backend_of(record).cancel(record)
    record.status = CANCELLED
    state.save()
    return record


def execute(state: "State", plan: "Plan", spec: Spec | None, say: Say) -> None:
    """Carry out a plan; the caller holds the state lock. With `cancel`, the only place that changes
    jobs and state."""
    action = plan.change.action
    record = state.jobs.get(plan.job)
    if action == NOOP:
        say("No changes. The job matches the configuration.")
        return
    if action in (DESTROY, REPLACE) and record is not None:
        backend_of(record).cancel(record)
        say(f"cancelled {record.job_id}" if record.status not in TERMINAL else f"job {plan.job} was already {record.status}")
    if action == DESTROY:
        state.forget(plan.job)
        state.save()
        say(f"Destroy complete: {plan.job} forgotten; results kept in {record.results_dir}")
        return
    backend = get_backend(plan.spec.get("cluster_type", plan.backend))
    if action == UPDATE and record is not None:
        live = backend.describe(record)
        if live.state not in TERMINAL:
            raise HpctlError(f"job {plan.job} is {live.state} now; the plan expected it ended", hint="run hpctl plan again")
    secrets = secrets_for(plan, spec)
    # The lineage is on disk before the job exists. A files-only artifact submits nothing: no tag, no state.
    tag = job_tag(state.begin_submit(plan.job), plan.job, plan.spec) if plan.artifact.submit else None
    crash_if("before_submit")
    job_id = backend.submit(plan.artifact, secrets, tag)
    crash_if("after_submit")
    if job_id == NOT_SUBMITTED:
        say(f"Apply complete: wrote {', '.join(plan.artifact.files)}; nothing submitted and no job recorded "
            "(cluster.slurm_create_submission_file_only is true)")
        return
    state.recorded(plan.job, JobRecord(
        name=plan.job, cluster=plan.cluster, backend=backend.name, job_id=job_id, spec_digest=digest(plan.spec),
        spec=plan.spec, artifact=plan.artifact.to_json(), results_dir=plan.artifact.results_dir,
        logs=plan.artifact.logs, applied_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), status=PENDING))
    state.save()
    verb = {CREATE: "created", UPDATE: "resubmitted", REPLACE: "replaced"}[action]
    say(f"Apply complete: job {plan.job} {verb} as {backend.name} job {job_id}")
    say(f"Logs: {', '.join(plan.artifact.logs.values())}  (hpctl logs {plan.job} -f)")
