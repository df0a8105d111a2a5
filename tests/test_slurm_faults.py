"""Scheduler faults on Slurm, through the CLI: slurmctld unreachable during apply, status and
cancel, an sbatch whose reply is lost, squeue output that is not JSON.

The Slurm clients are stand-ins on PATH that replay a script of answers (one per call, the last
repeating) with the exact error text Slurm prints, and log each call. The retry delays are
shortened; their number is what the tests count.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hpctl.backends import slurm
from hpctl.backends.base import TaggedJob
from hpctl.backends.common import JobTag, job_tag
from tests.helpers.workspace import MINI_RECIPE, write_files

UNREACHABLE = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
NO_REPLY = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
SQUEUE_DOWN = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
# `squeue --json` of Slurm 22.05 with slurmctld stopped (tests/slurm/test_slurmctld_faults.py): exit 0,
# nothing on stderr, the failure only in the document's errors.
SQUEUE_JSON_DOWN = json.dumps({
    "meta": {"plugin": {"type": "openapi/v0.0.38", "name": "Slurm OpenAPI v0.0.38"}},
    "errors": [{"description": "Failed while looking for jobs", "error_number": -1,
                "error": "Unspecified error", "source": "slurm_load_jobs"}],
    "jobs": []})
STUB = """#!/bin/bash
name=$(basename "$0")
echo "$name $*" >> "{dir}/calls.log"
plan="{dir}/$name.plan"
line=$(head -n 1 "$plan")
if [ "$(wc -l < "$plan")" -gt 1 ]; then sed -i 1d "$plan"; fi
case "$line" in
  fail:*) echo "${{line#fail:}}" >&2; exit 1 ;;
  ok:*) printf '%s\\n' "${{line#ok:}}"; exit 0 ;;
esac
"""


class Slurm:
    """Stand-in clients: `answers(cmd, *lines)` sets what each next call of cmd does."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "slurm-stubs"
        self.dir.mkdir()
        for name in ("sbatch", "squeue", "scontrol", "sacct", "scancel"):
            (self.dir / name).write_text(STUB.format(dir=self.dir))
            (self.dir / name).chmod(0o755)
            self.answers(name, "fail:not scripted")

    def answers(self, cmd: str, *lines: str) -> None:
        (self.dir / f"{cmd}.plan").write_text("".join(line + "\n" for line in lines))

    def calls(self) -> list[str]:
        log = self.dir / "calls.log"
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return [c.split()[0] for c in calls]

    def argv(self, cmd: str) -> list[str]:
        """The arguments of each call of `cmd` logged since the last `calls()`."""
        log = self.dir / "calls.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line.partition(" ")[2] for line in lines if line.partition(" ")[0] == cmd]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Slurm:
    stubs = Slurm(tmp_path)
    monkeypatch.setenv("PATH", f"{stubs.dir}:/usr/bin:/bin")
    monkeypatch.setattr(slurm, "RETRY_DELAYS_S", (0.01, 0.02, 0.04))
    return stubs


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    write_files(root, {
        "config.yaml": f"base_results_dir: {tmp_path}/results\nenv_vars: {{}}\n",
        "clusters/slurm.yaml": f"type: slurm\ndevices_per_node: 1\ndevice_memory_gb: 16\nworkdir: {tmp_path}\n",
        "recipes/tiny/mini.yaml": MINI_RECIPE,
    })
    return root


def state_of(ws: Path) -> dict:
    path = ws / ".hpctl" / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_sbatch_retries_while_slurmctld_is_unreachable(fake, ws, run_cli):
    fake.answers("sbatch", f"fail:{UNREACHABLE}", f"fail:{UNREACHABLE}", "ok:4242")
    rc, out, err = run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws)
    assert rc == 0, err
    assert "created as slurm job 4242" in out
    assert fake.calls() == ["sbatch"] * 3
    assert state_of(ws)["jobs"]["mini"]["job_id"] == "4242"


def test_sbatch_gives_up_clearly_and_records_no_job(fake, ws, run_cli):
    fake.answers("sbatch", f"fail:{UNREACHABLE}")
    rc, out, err = run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws)
    assert rc == 1 and "Traceback" not in err
    assert "sbatch could not reach slurmctld (4 attempts); nothing was submitted" in err
    assert "scontrol ping" in err
    assert fake.calls() == ["sbatch"] * 4
    assert state_of(ws)["jobs"] == {}  # created with its lineage before sbatch (the tag names it); no job


def test_lost_sbatch_reply_is_not_retried(fake, ws, run_cli):
    """The controller may have queued the job: submitting again could run it twice."""
    fake.answers("sbatch", f"fail:{NO_REPLY}")
    rc, _, err = run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws)
    assert rc == 1 and "may or may not have been submitted" in err
    assert "squeue --name=mini" in err  # the script's --job-name
    assert fake.calls() == ["sbatch"]
    # no job recorded; the mark written before sbatch stays, so the next plan asks squeue for it
    assert state_of(ws)["jobs"] == {} and list(state_of(ws)["submitting"]) == ["mini"]


def test_status_and_cancel_while_slurmctld_is_down_then_back(fake, ws, run_cli, tmp_path):
    fake.answers("sbatch", "ok:77")
    assert run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws)[0] == 0
    fake.calls()
    serial = state_of(ws)["serial"]

    fake.answers("squeue", f"fail:{SQUEUE_DOWN}")
    rc, out, err = run_cli("status", "--json", "-w", ws)
    assert rc == 0, err
    job = json.loads(out)["jobs"][0]
    assert job["state"] == "UNKNOWN" and job["backend_state"] == "unreachable"
    assert "slurmctld did not answer" in job["detail"]
    assert fake.calls() == ["squeue"] * 4  # bounded: the retries, then no scontrol/sacct storm
    assert state_of(ws)["jobs"]["mini"]["status"] == "PENDING"  # no answer is no news: the last known stays
    assert state_of(ws)["serial"] == serial

    fake.answers("scancel", f"fail:scancel: error: {SQUEUE_DOWN}")
    rc, _, err = run_cli("cancel", "mini", "-w", ws)
    assert rc == 1 and "the job was not cancelled" in err and "Traceback" not in err
    assert fake.calls() == ["scancel"] * 4
    assert state_of(ws)["jobs"]["mini"]["status"] != "CANCELLED"
    assert state_of(ws)["serial"] >= serial  # readable, and only moved forward

    running = {"jobs": [{"job_id": 77, "job_state": ["RUNNING"]}]}
    fake.answers("squeue", f"fail:{SQUEUE_DOWN}", "ok:" + json.dumps(running))  # back after one retry
    rc, out, _ = run_cli("status", "--json", "-w", ws)
    assert rc == 0 and json.loads(out)["jobs"][0]["state"] == "RUNNING"
    assert state_of(ws)["jobs"]["mini"]["status"] == "RUNNING"
    fake.answers("scancel", "ok:")
    assert run_cli("cancel", "mini", "-w", ws)[0] == 0
    assert state_of(ws)["jobs"]["mini"]["status"] == "CANCELLED"


def test_unparseable_squeue_output_falls_back(fake, ws, run_cli):
    fake.answers("sbatch", "ok:88")
    assert run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws)[0] == 0
    fake.answers("squeue", "ok:squeue: warning: <html>not json")
    fake.answers("scontrol", "ok:JobId=88 JobName=hpctl-mini JobState=PENDING Reason=Priority")
    rc, out, err = run_cli("status", "--json", "-w", ws)
    assert rc == 0, err
    job = json.loads(out)["jobs"][0]
    assert (job["state"], job["detail"]) == ("PENDING", "reason Priority")


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before_submit", "after_submit", "during_state_write"])
def test_apply_killed_at_each_step_never_submits_twice(fake, ws, run_cli, run_hpctl, point):
    """`hpctl apply` (its own process) SIGKILLs itself at POINT (HPCTL_APPLY_CRASH_AT). The state
    file holds the previous jobs and serial, plus the mark that `mini` was being submitted; the
    dead process's lock is broken by the next apply, which, for that mark, finds a job sbatch
    accepted by its --comment (one squeue) and adopts it: sbatch ran once for the job, whatever
    the point. The mark is gone once the job is recorded."""
    fake.answers("sbatch", "ok:100", "ok:4242", "ok:4343")
    fake.answers("squeue", "ok:")  # no job of this user carries the tag yet
    assert run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws, "run.name=other")[0] == 0
    path = ws / ".hpctl" / "state.json"
    before = path.read_bytes()
    fake.calls()

    killed = run_hpctl("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws,
                       env={"HPCTL_APPLY_CRASH_AT": point})
    assert killed.returncode == -9, killed.stderr
    after, previous = state_of(ws), json.loads(before)
    assert (after["jobs"], after["serial"], sorted(after["submitting"])) == (previous["jobs"], previous["serial"], ["mini"])
    assert json.loads((ws / ".hpctl" / "state.json.lock").read_text())["pid"] > 0  # left behind
    submitted = fake.argv("sbatch")
    assert len(submitted) == (0 if point == "before_submit" else 1)
    if submitted:
        comment = re.search(r"--comment=(hpctl-[0-9a-f]+ spec=[0-9a-f]+) ", submitted[0]).group(1)
        fake.answers("squeue", f"ok:4242|PENDING|{comment}")  # the stand-in answers one line a call
    fake.calls()

    rc, out, err = run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws)
    assert rc == 0, err
    assert "breaking a stale state lock" in err
    if submitted:
        assert "adopted job mini (slurm job 4242, PENDING) found on the scheduler but missing from state" in err
        assert "No changes" in out
        assert fake.calls() == ["squeue"]
    else:
        assert "created as slurm job 4242" in out
        assert fake.calls() == ["squeue", "sbatch"]
    state = state_of(ws)
    assert state["jobs"]["mini"]["job_id"] == "4242" and state["jobs"]["mini"]["status"] == "PENDING"
    assert sorted(state["jobs"]) == ["mini", "other"] and state["lineage"] == json.loads(before)["lineage"]
    assert state["submitting"] == {}
    assert not (ws / ".hpctl" / "state.json.lock").exists()
    assert sorted(p.name for p in (ws / ".hpctl").iterdir()) == ["state.json", "state.json.backup"]  # no litter


def test_tagged_jobs_are_read_from_squeue_comments():
    """`squeue --format=%i|%T|%k` lines: only this tag's jobs (not another workspace's, not an
    array task), oldest first, with the spec part of the comment and hpctl's state."""
    tag = JobTag("hpctl-" + "a" * 24, "0123456789ab")
    other = JobTag("hpctl-" + "b" * 24, "0123456789ab")
    text = "\n".join([f"90|RUNNING|{tag.comment}", "77|RUNNING|a user's own comment", f"78|PENDING|{other.comment}",
                      f"12_3|PENDING|{tag.comment}", f"9|COMPLETING|{tag.value} spec=ffffffffffff", "garbage"])
    assert slurm.parse_tagged(text, tag) == [TaggedJob("9", "RUNNING", "ffffffffffff"),
                                             TaggedJob("90", "RUNNING", "0123456789ab")]


def died_submitting(ws, job: str) -> None:
    """Leave state as an apply of `job` that died around its sbatch leaves it: with its mark."""
    path = ws / ".hpctl" / "state.json"
    doc = json.loads(path.read_text())
    doc["submitting"][job] = "2026-01-01T00:00:00Z"
    path.write_text(json.dumps(doc))


def test_a_lost_job_of_another_spec_is_adopted_and_the_plan_replaces_it(fake, ws, run_cli):
    """The tagged job found was submitted with other inputs (its comment's spec part differs):
    it is adopted all the same, and the plan cancels and replaces it, as for any running job
    whose inputs changed. `hpctl plan` shows this without writing state."""
    fake.answers("sbatch", "ok:100")
    assert run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws, "run.name=other")[0] == 0
    tag = job_tag(state_of(ws)["lineage"], "mini", {})
    died_submitting(ws, "mini")
    fake.answers("squeue", f"ok:555|RUNNING|{tag.value} spec=ffffffffffff")
    rc, out, err = run_cli("plan", "mini", "--cluster", "slurm", "-w", ws)
    assert rc == 0, err
    assert "adopted job mini (slurm job 555, RUNNING) found on the scheduler but missing from state; " \
           "it was submitted with another spec than this plan's" in err
    assert "-/+ job mini: replace (the job is RUNNING: it will be cancelled and submitted again)" in out
    assert sorted(state_of(ws)["jobs"]) == ["other"]

    saved = ws / "mini.plan"  # a saved plan made with the adoption applies: apply adopts the same record
    assert run_cli("plan", "mini", "--cluster", "slurm", "-w", ws, "--out", saved)[0] == 0
    fake.answers("scancel", "ok:")
    fake.answers("sbatch", "ok:556")
    fake.calls()
    rc, out, err = run_cli("apply", saved, "-w", ws)
    assert rc == 0, err
    assert "cancelled 555" in out and "replaced as slurm job 556" in out
    assert fake.calls() == ["squeue", "scancel", "sbatch"]
    assert state_of(ws)["jobs"]["mini"]["job_id"] == "556"


def test_a_replacement_submitted_but_not_recorded_is_adopted_over_the_ended_record(fake, ws, run_cli):
    """State records job 4242, which ended FAILED; an update that died after sbatch left 4243
    running under the same tag. The plan adopts 4243 (not the ended one) and changes nothing."""
    fake.answers("sbatch", "ok:4242")
    assert run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws)[0] == 0
    comment = re.search(r"--comment=(\S+ spec=\S+) ", fake.argv("sbatch")[0]).group(1)
    died_submitting(ws, "mini")
    failed = {"jobs": [{"job_id": 4242, "job_state": ["FAILED"], "exit_code": 256}]}
    fake.answers("squeue", "ok:" + json.dumps(failed), f"ok:4243|RUNNING|{comment}")
    fake.calls()
    rc, out, err = run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws)
    assert rc == 0, err
    assert "adopted job mini (slurm job 4243, RUNNING)" in err and "No changes" in out
    assert fake.calls() == ["squeue", "squeue"]  # the refresh, then the tag: no sbatch
    assert state_of(ws)["jobs"]["mini"]["job_id"] == "4243"


def test_squeue_json_reporting_its_failure_with_exit_0_is_slurmctld_unreachable(fake, ws, run_cli):
    """22.05's shape: no "Unable to contact" text anywhere, yet the job list is not an answer."""
    fake.answers("sbatch", "ok:99")
    assert run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws)[0] == 0
    fake.calls()
    fake.answers("squeue", "ok:" + SQUEUE_JSON_DOWN)
    rc, out, err = run_cli("status", "--json", "-w", ws)
    assert rc == 0, err
    job = json.loads(out)["jobs"][0]
    assert (job["state"], job["backend_state"]) == ("UNKNOWN", "unreachable")
    assert "Failed while looking for jobs (slurm_load_jobs)" in job["detail"]
    assert fake.calls() == ["squeue"] * 4  # retried like a refused connection; no scontrol/sacct after it
    assert err.count("slurmctld did not answer") == 3 and "attempt 4 of 4" in err


def test_a_client_that_hangs_is_stopped_and_sbatch_is_not_repeated(fake, ws, run_cli, monkeypatch):
    """slurmctld hung (SIGSTOP, overload): the call is bounded by COMMAND_TIMEOUT_S and an sbatch
    stopped that way may have been accepted, so it is reported, not retried."""
    monkeypatch.setattr(slurm, "COMMAND_TIMEOUT_S", 0.5)
    fake.answers("sbatch", "hang:")
    (fake.dir / "sbatch").write_text((fake.dir / "sbatch").read_text().replace(
        "case \"$line\" in", "case \"$line\" in\n  hang:*) exec sleep 30 ;;"))
    rc, _, err = run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws)
    assert rc == 1 and "Traceback" not in err
    assert "may or may not have been submitted" in err and "no answer within 0.5 s" in err
    assert fake.calls() == ["sbatch"]
    assert state_of(ws)["jobs"] == {}  # the lineage was written before the submit; no job


def test_scancel_without_reply_is_not_repeated_and_says_the_job_may_still_run(fake, ws, run_cli):
    """Recorded from 22.05 with slurmctld hung (SIGSTOP): scancel exits 140 after MessageTimeout."""
    fake.answers("sbatch", "ok:55")
    assert run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws)[0] == 0
    fake.calls()
    fake.answers("scancel", "fail:scancel: error: Kill job error on job id 55: Socket timed out on send/recv operation")
    rc, _, err = run_cli("cancel", "mini", "-w", ws)
    assert rc == 1 and "no reply from slurmctld; the job may or may not be cancelled" in err and "hpctl status" in err
    assert fake.calls() == ["scancel"]
    assert state_of(ws)["jobs"]["mini"]["status"] != "CANCELLED"


def test_only_a_job_an_apply_began_to_submit_is_looked_for(fake, ws, run_cli):
    """A plan asks the scheduler for a lost job only when state marks the job as being submitted:
    planning a new job, or one the user forgot (`state rm`, `destroy`), calls no squeue, and the
    forgotten job is not brought back even while the scheduler still lists it."""
    fake.answers("sbatch", "ok:100")
    assert run_cli("apply", "mini", "--cluster", "slurm", "--auto-approve", "-w", ws, "run.name=other")[0] == 0
    assert state_of(ws)["submitting"] == {}
    tag = job_tag(state_of(ws)["lineage"], "other", {})
    fake.answers("squeue", f"ok:100|RUNNING|{tag.value} spec=ffffffffffff")
    fake.calls()
    rc, out, err = run_cli("plan", "mini", "--cluster", "slurm", "-w", ws)
    assert rc == 0 and "+ job mini: create" in out and fake.calls() == []
    assert run_cli("state", "rm", "other", "-w", ws)[0] == 0
    rc, out, err = run_cli("plan", "mini", "--cluster", "slurm", "-w", ws, "run.name=other")
    assert rc == 0 and "+ job other: create" in out and "adopted" not in err and fake.calls() == []
