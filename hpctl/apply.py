"""Apply: the only step with side effects. It brings a job to what its plan showed and records it.

Order, as Terraform's: take the state lock, then (without a saved plan) plan under the lock, then
submit and write state, then release. So concurrent applies of different jobs in one workspace
queue on the lock (up to --lock-timeout) and all succeed; none reads a state another is about
to replace. A saved plan is stale only when the job it changes was changed since (applied again,
forgotten, or created by someone else), never because another job moved state on.

Before planning, the job's recorded status is refreshed from its scheduler (Terraform's refresh):
a job that ended FAILED or CANCELLED since it was last looked at plans as `~` resubmit, so
`hpctl apply` of unchanged inputs brings it back to running and it resumes from its checkpoint.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from hpctl.backends import get_backend
from hpctl.backends.base import NOT_SUBMITTED
from hpctl.diff import CREATE, DESTROY, NOOP, REPLACE, UPDATE
from hpctl.errors import HpctlError, Origin
from hpctl.records import TERMINAL, JobRecord, record_digest
from hpctl.spec import REDACTED, Spec, digest, get_path

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
        record.status = backend_of(record).describe(record).state
    except HpctlError as e:
        print(f"warning: could not refresh the status of {job} ({e.problems[0].message}); "
              f"using the recorded {record.status}", file=sys.stderr)


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


def execute(state: "State", plan: "Plan", spec: Spec | None, say: Say) -> None:
    """Carry out a plan; the caller holds the state lock. The only place that changes jobs and state."""
    action = plan.change.action
    record = state.jobs.get(plan.job)
    if action == NOOP:
        say("No changes. The job matches the configuration.")
        return
    if action in (DESTROY, REPLACE) and record is not None:
        backend_of(record).cancel(record)
        say(f"cancelled {record.job_id}" if record.status not in TERMINAL else f"job {plan.job} was already {record.status}")
    if action == DESTROY:
        del state.jobs[plan.job]
        state.save()
        say(f"Destroy complete: {plan.job} forgotten; results kept in {record.results_dir}")
        return
    backend = get_backend(plan.spec.get("cluster_type", plan.backend))
    if action == UPDATE and record is not None:
        live = backend.describe(record)
        if live.state not in TERMINAL:
            raise HpctlError(f"job {plan.job} is {live.state} now; the plan expected it ended", hint="run hpctl plan again")
    job_id = backend.submit(plan.artifact, secrets_for(plan, spec))
    if job_id == NOT_SUBMITTED:
        say(f"Apply complete: wrote {', '.join(plan.artifact.files)}; nothing submitted and no job recorded "
            "(cluster.slurm_create_submission_file_only is true)")
        return
    state.jobs[plan.job] = JobRecord(
        name=plan.job, cluster=plan.cluster, backend=backend.name, job_id=job_id, spec_digest=digest(plan.spec),
        spec=plan.spec, artifact=plan.artifact.to_json(), results_dir=plan.artifact.results_dir,
        logs=plan.artifact.logs, applied_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), status="PENDING")
    state.save()
    verb = {CREATE: "created", UPDATE: "resubmitted", REPLACE: "replaced"}[action]
    say(f"Apply complete: job {plan.job} {verb} as {backend.name} job {job_id}")
    say(f"Logs: {', '.join(plan.artifact.logs.values())}  (hpctl logs {plan.job} -f)")
