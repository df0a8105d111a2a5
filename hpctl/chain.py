"""`--after NAME`: a job that starts only once another job in state has succeeded.

The wait is written into the rendered artifact, so the plan shows it and a saved plan carries it:
- Slurm: `#SBATCH --dependency=afterok:<id>` (and `--kill-on-invalid-dep=yes`, so a failed first
  job removes the second instead of leaving it pending forever);
- local: the launch script waits for the first job's exit marker (or its process to vanish) and
  starts only on exit code 0, else it records exit 1 without running.
Kubernetes and SageMaker have no dependency between an hpctl job and another that hpctl could
submit without a controller of its own, so `--after` is refused there.
"""
from __future__ import annotations

import shlex
from dataclasses import replace

from hpctl.backends.base import TERMINAL, SUCCEEDED, Artifact, JobRecord
from hpctl.errors import HpctlError
from hpctl.suggest import did_you_mean

REFUSED = ("Kubernetes and SageMaker have no dependency between two jobs that hpctl could submit without "
           "a controller of its own")


def after(artifact: Artifact, backend: str, record: JobRecord | None, name: str, known: list[str],
          status: str | None) -> Artifact:
    """The artifact, made to start only after job `name` (its record in state) succeeds."""
    if record is None:
        raise HpctlError(f"--after {name}: no job {name!r} in state", found=name,
                         hint=did_you_mean(name, known) or "apply the job to wait for first")
    if backend not in ("local", "slurm"):
        raise HpctlError(f"--after is not supported on {backend}: {REFUSED}",
                         hint=f"wait for {name} yourself (hpctl status {name} --watch), then apply")
    if record.backend != backend:
        raise HpctlError(f"--after {name}: {name} is a {record.backend} job and this one runs on {backend}",
                         hint="chain jobs of the same cluster")
    if status in TERMINAL and status != SUCCEEDED:
        raise HpctlError(f"--after {name}: {name} already ended {status}; this job would never start",
                         hint=f"see hpctl logs {name}")
    if status == SUCCEEDED:  # nothing to wait for (Slurm forgets ended jobs: afterok on one could be refused)
        return artifact
    if backend == "slurm":
        lines = [f"#SBATCH --dependency=afterok:{record.job_id}  # hpctl apply --after {name}",
                 "#SBATCH --kill-on-invalid-dep=yes"]
        return _insert(artifact, 1, lines)
    exit_file = f"{record.results_dir}/hpctl/exit.{record.job_id}"
    q = shlex.quote
    lines = [
        f"# hpctl apply --after {name}: start when local job {record.job_id} has exited 0",
        f"while kill -0 {record.job_id} 2>/dev/null && [ ! -e {q(exit_file)} ]; do sleep 1; done",
        f'if [ "$(cat {q(exit_file)} 2>/dev/null)" != 0 ]; then',
        f"  echo {q(f'hpctl: job {name} did not succeed; this job does not start')} >&2",
        f"  mkdir -p {q(artifact.results_dir + '/hpctl')} && echo 1 > {q(artifact.results_dir + '/hpctl/exit.')}$$",
        "  exit 1",
        "fi",
    ]
    at = next(i for i, line in enumerate(artifact.text.splitlines()) if line.startswith("set -u")) + 1
    return _insert(artifact, at, lines)


def _insert(artifact: Artifact, at: int, lines: list[str]) -> Artifact:
    """The artifact with `lines` inserted before line index `at` of its text, in the text and in
    every written file that holds the same text (the script the backend runs)."""
    old = artifact.text
    split = old.splitlines(keepends=True)
    new = "".join(split[:at]) + "".join(line + "\n" for line in lines) + "".join(split[at:])
    files = {path: (new if content == old else content) for path, content in artifact.files.items()}
    return replace(artifact, text=new, files=files)
