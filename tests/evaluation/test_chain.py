"""`--after JOB`: the wait written into the artifact (Slurm's dependency, the local script's wait),
and the refusals: Kubernetes and SageMaker, an unknown job, a job that already failed."""
from __future__ import annotations

import pytest

from hpctl.backends.base import Artifact
from hpctl.chain import after
from hpctl.errors import HpctlError
from hpctl.records import JobRecord

SBATCH = "#!/bin/bash\n#SBATCH --job-name=ev\nsrun python -m adapter.evaluate\n"


def record(backend: str = "slurm", job_id: str = "41") -> JobRecord:
    return JobRecord("train", backend, backend, job_id, "d", {}, {}, "/r/train", {}, "t")


def test_slurm_depends_on_the_first_job_succeeding_in_the_script_it_writes() -> None:
    art = Artifact("sbatch", SBATCH, files={"/r/ev/ev.sbatch": SBATCH}, results_dir="/r/ev")
    out = after(art, "slurm", record(), "train", ["train"], "RUNNING")
    lines = out.text.splitlines()
    assert lines[:4] == ["#!/bin/bash", "#SBATCH --dependency=afterok:41  # hpctl apply --after train",
                         "#SBATCH --kill-on-invalid-dep=yes", "#SBATCH --job-name=ev"]
    assert out.files == {"/r/ev/ev.sbatch": out.text}


def test_the_local_script_waits_for_the_exit_marker_and_starts_only_on_zero() -> None:
    text = "#!/usr/bin/env bash\nset -u\npython -m adapter.evaluate\n"
    art = Artifact("command", text, files={"/r/ev/hpctl/launch.sh": text}, results_dir="/r/ev")
    out = after(art, "local", record("local", "77"), "train", ["train"], "RUNNING").text
    assert "while kill -0 77 2>/dev/null && [ ! -e /r/train/hpctl/exit.77 ]" in out
    assert out.index("exit.77 ]; do sleep 1; done") < out.index("python -m adapter.evaluate")
    assert "echo 1 > /r/ev/hpctl/exit.$$" in out


@pytest.mark.parametrize(("backend", "rec", "status", "words"), [
    ("k8s", record("k8s"), "RUNNING", "--after is not supported on k8s: Kubernetes and SageMaker have no dependency"),
    ("sm_jobs", record("sm_jobs"), "RUNNING", "--after is not supported on sm_jobs"),
    ("slurm", None, None, "no job 'trian' in state"),
    ("slurm", record(), "FAILED", "train already ended FAILED; this job would never start"),
    ("slurm", record("local"), "RUNNING", "train is a local job and this one runs on slurm"),
])
def test_what_cannot_be_chained_is_refused(backend: str, rec, status, words: str) -> None:
    name = "trian" if rec is None else "train"
    with pytest.raises(HpctlError) as exc:
        after(Artifact("sbatch", SBATCH), backend, rec, name, ["train"], status)
    assert words in str(exc.value)
    if rec is None:
        assert "did you mean 'train'?" in str(exc.value)


def test_a_job_that_already_succeeded_needs_no_wait() -> None:
    art = Artifact("sbatch", SBATCH, files={"/r/ev/ev.sbatch": SBATCH}, results_dir="/r/ev")
    assert after(art, "slurm", record(), "train", ["train"], "SUCCEEDED") == art
