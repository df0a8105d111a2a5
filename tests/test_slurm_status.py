"""Slurm status from recorded outputs (22.05 and 24.11 JSON, scontrol, sacct) and the exit marker;
log reading, following and rank filtering; submit's error paths. No Slurm needed."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from hpctl.backends import common, slurm
from hpctl.backends.base import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, UNKNOWN, Artifact, JobRecord
from hpctl.backends.slurm import (
    BACKEND, parse_sacct, parse_scontrol, parse_squeue_json, read_exit_marker, to_status,
)
from hpctl.backends.common import last_metrics
from hpctl.errors import HpctlError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def status_of(job, marker=None):
    s = to_status(job, marker)
    return s.state, s.exit_code, s.backend_state


@pytest.mark.parametrize("job_id, expected", [
    ("14", (PENDING, None, "PENDING")),          # held
    ("15", (RUNNING, None, "RUNNING")),
    ("16", (SUCCEEDED, 0, "COMPLETED")),
    ("17", (FAILED, 3, "FAILED")),               # exit_code 768: a raw wait status
    ("18", (CANCELLED, None, "CANCELLED")),
    ("19", (PENDING, None, "PENDING")),          # requeued: restart_cnt 2, reason BeginTime
    ("20", (FAILED, 143, "TIMEOUT")),            # killed by SIGTERM at the limit
])
def test_squeue_json_22_05(job_id, expected):
    job = parse_squeue_json(fixture("squeue-22.05.json"), job_id)
    assert status_of(job) == expected


def test_squeue_22_05_details_and_filtering():
    text = fixture("squeue-22.05.json")
    requeued = to_status(parse_squeue_json(text, "19"), None)
    assert requeued.detail == "reason BeginTime; restarts 2"
    assert to_status(parse_squeue_json(text, "14"), None).detail == "reason JobHeldUser"
    # 22.05 lists every job whatever -j says: a job that is not there is None, not another job
    assert parse_squeue_json(text, "99") is None
    assert parse_squeue_json("not json", "14") is None


@pytest.mark.parametrize("job_id, expected", [
    ("101", (RUNNING, None, "RUNNING")),
    ("102", (PENDING, None, "PENDING,REQUEUED")),
    ("103", (SUCCEEDED, 0, "COMPLETED")),
    ("104", (FAILED, 3, "FAILED")),
    ("105", (CANCELLED, None, "CANCELLED")),
    ("106", (FAILED, 143, "TIMEOUT")),
    ("107", (FAILED, 137, "PREEMPTED")),
    ("108", (FAILED, 1, "NODE_FAIL")),
    ("109", (RUNNING, None, "RUNNING,COMPLETING")),
])
def test_squeue_json_24_11(job_id, expected):
    job = parse_squeue_json(fixture("squeue-24.11.json"), job_id)
    assert status_of(job) == expected


def test_requeue_flag_is_never_terminal():
    job = slurm.SlurmJob(["FAILED", "REQUEUED"], exit_code=3)
    assert to_status(job, None).state == PENDING


@pytest.mark.parametrize("name, expected", [
    ("running", (RUNNING, None, "RUNNING")),
    ("failed", (FAILED, 3, "FAILED")),
    ("cancelled", (CANCELLED, None, "CANCELLED")),
    ("requeued", (PENDING, None, "PENDING")),
    ("timeout", (FAILED, 143, "TIMEOUT")),
])
def test_scontrol_show_job_22_05(name, expected):
    job = parse_scontrol(fixture(f"scontrol-22.05-{name}.txt"))
    assert status_of(job) == expected
    assert parse_scontrol("slurm_load_jobs error: Invalid job id specified") is None


def test_scontrol_restarts_and_reason():
    status = to_status(parse_scontrol(fixture("scontrol-22.05-requeued.txt")), None)
    assert status.detail == "reason BeginTime; restarts 2"


@pytest.mark.parametrize("job_id, expected", [
    ("201", (SUCCEEDED, 0, "COMPLETED")),
    ("202", (FAILED, 3, "FAILED")),
    ("203", (CANCELLED, None, "CANCELLED")),   # "CANCELLED by 1000"
    ("204", (FAILED, 143, "TIMEOUT")),
    ("205", (PENDING, None, "PENDING")),
    ("206", (FAILED, 1, "NODE_FAIL")),
    ("207", (FAILED, 253, "OUT_OF_MEMORY")),
])
def test_sacct(job_id, expected):
    assert status_of(parse_sacct(fixture("sacct.txt"), job_id)) == expected


def test_sacct_unknown_job():
    assert parse_sacct(fixture("sacct.txt"), "999") is None


def test_exit_marker_is_the_last_resort(tmp_path):
    assert status_of(None, 0) == (SUCCEEDED, 0, None)
    assert status_of(None, 3) == (FAILED, 3, None)
    unknown = to_status(None, None)
    assert unknown.state == UNKNOWN and "MinJobAge" in unknown.detail
    (tmp_path / "logs").mkdir()
    assert read_exit_marker(str(tmp_path), "7") is None
    (tmp_path / "logs" / "7.exit").write_text("5\n")
    assert read_exit_marker(str(tmp_path), "7") == 5


def test_last_metrics_reads_the_final_complete_line(tmp_path):
    assert last_metrics(str(tmp_path)) is None
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": i, "loss": 10.0 - i, "tokens_per_s": 100.0 * i}) for i in range(1, 2000)]
    path.write_text("\n".join(lines) + '\n{"step": 2000, "lo')  # the trainer is mid-write
    assert last_metrics(str(tmp_path)) == {"step": 1999, "loss": -1989.0, "tokens_per_s": 199900.0}


def record_for(tmp_path: Path, job_id: str = "42", stderr: bool = False) -> JobRecord:
    logs = {"stdout": f"{tmp_path}/logs/%j.out"}
    if stderr:
        logs["stderr"] = f"{tmp_path}/logs/%j.err"
    return JobRecord(name="tiny", cluster="slurm", backend="slurm", job_id=job_id, spec_digest="", spec={},
                     artifact={}, results_dir=str(tmp_path), logs=logs, applied_at="")


def test_describe_falls_back_to_the_marker_and_reads_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(BACKEND, "query", lambda job_id: None)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "42.exit").write_text("3\n")
    (tmp_path / "metrics.jsonl").write_text('{"step": 5, "loss": 2.5}\n')
    status = BACKEND.describe(record_for(tmp_path))
    assert (status.state, status.exit_code, status.metrics) == (FAILED, 3, {"step": 5, "loss": 2.5})


def test_logs_read_and_rank_filter(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "42.out").write_text(
        "hpctl: job 42 run 0 on n[1-2]\n[rank0]: step 1 loss 2.0\n[rank1]: hello from 1\n[rank10]: ten\n")
    (tmp_path / "logs" / "42.err").write_text("[rank1]: Traceback\n")
    record = record_for(tmp_path, stderr=True)
    assert list(BACKEND.logs(record))[:2] == ["hpctl: job 42 run 0 on n[1-2]", "[rank0]: step 1 loss 2.0"]
    assert list(BACKEND.logs(record, rank=1)) == ["hello from 1", "Traceback"]
    assert list(BACKEND.logs(record, rank=10)) == ["ten"]


def test_logs_of_a_job_without_a_log_yet(tmp_path):
    with pytest.raises(HpctlError, match="no log yet"):
        list(BACKEND.logs(record_for(tmp_path)))


def test_follow_continues_across_a_requeue_until_terminal(tmp_path):
    """The file grows, pauses (job requeued, PENDING), grows again (append mode), then ends."""
    log = tmp_path / "42.out"
    current = {"state": RUNNING}

    def writer():
        for chunk, state in [("run 0 line\n[rank0]: par", RUNNING), ("tial\nrun 0 fails\n", PENDING),
                             ("run 1 line\n", RUNNING), ("run 1 done", SUCCEEDED)]:
            with log.open("a") as f:
                f.write(chunk)
            current["state"] = state
            time.sleep(0.15)

    thread = threading.Thread(target=writer)
    thread.start()
    lines = list(common.follow_lines([log], lambda: current["state"] == SUCCEEDED, poll_s=0.02, check_every_s=0.05))
    thread.join()
    assert lines == ["run 0 line", "[rank0]: partial", "run 0 fails", "run 1 line", "run 1 done"]


def write_stub(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/bash\n" + body)
    (bin_dir / name).chmod(0o755)


def artifact_in(tmp_path: Path) -> Artifact:
    script = f"{tmp_path}/res/hpctl/tiny.sbatch"
    return Artifact(kind="sbatch", text="#!/bin/bash\ntrue\n", files={script: "#!/bin/bash\ntrue\n"},
                    env={"HPCTL_SECRET_GIT_TOKEN": "git.token"}, results_dir=f"{tmp_path}/res")


def test_submit_without_sbatch_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HpctlError, match="sbatch is not on PATH"):
        BACKEND.submit(artifact_in(tmp_path), {"HPCTL_SECRET_GIT_TOKEN": "x"})


def test_submit_reports_sbatch_errors(tmp_path, monkeypatch):
    write_stub(tmp_path / "bin", "sbatch", "echo 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with pytest.raises(HpctlError) as err:
        BACKEND.submit(artifact_in(tmp_path), {"HPCTL_SECRET_GIT_TOKEN": "x"})
    assert "invalid partition specified: nope" in str(err.value)


def test_submit_passes_secrets_by_environment_and_strips_the_cluster(tmp_path, monkeypatch):
    write_stub(tmp_path / "bin", "sbatch",
               f'echo "$HPCTL_SECRET_GIT_TOKEN $*" > {tmp_path}/seen\necho "1234;ci"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    artifact = artifact_in(tmp_path)
    with pytest.raises(HpctlError, match="git.token"):
        BACKEND.submit(artifact, {})
    assert BACKEND.submit(artifact, {"HPCTL_SECRET_GIT_TOKEN": "s3cret"}) == "1234"
    script = f"{tmp_path}/res/hpctl/tiny.sbatch"
    assert (tmp_path / "seen").read_text() == f"s3cret --parsable --export=ALL {script}\n"
    assert (tmp_path / "res" / "logs").is_dir()  # slurmd opens the output file there
    assert "s3cret" not in Path(script).read_text()
