"""The local backend: torchrun on this machine, detached, for CPU (gloo) or local GPUs.

apply writes the spec and a launch script into the results dir and starts the script in its own
session, logging to `<results>/logs/stdout.log`. The job id is the script's pid; the script
records torchrun's exit code in `<results>/hpctl/exit.<pid>`, and cancel leaves
`cancelled.<pid>` beside it, so status is known after the process is gone.

The tag apply gives (common.JobTag) is kept where the local "scheduler", the kernel, keeps it:
the script's environment (HPCTL_JOB_TAG), read back from /proc by `find_tagged`.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapter.rank_prefix import TEE_ALL, rank_prefix_env
from hpctl import ft_launch
from hpctl.backends.base import (CANCELLED, FAILED, RUNNING, SUCCEEDED, TERMINAL, UNKNOWN, Artifact, Backend,
                                 JobRecord, JobStatus, TaggedJob)
from hpctl.backends.common import JobTag, job_env, last_metrics, log_lines, secret_vars
from hpctl.devices import devices_per_node
from hpctl.engines import uses_ray
from hpctl.entry import entry_point
from hpctl.spec import Spec
from hpctl.templating import render

GRACE_SECONDS = 30.0
TAG_ENV = "HPCTL_JOB_TAG"


class LocalBackend(Backend):
    name = "local"

    def fault_tolerance(self, spec: Spec, ft: Any) -> tuple[str, str]:
        return ft_launch.lighthouse_address(ft), "hpctl's local launch script"

    def doctor(self, cluster: dict[str, Any], general: dict[str, Any]) -> list[Any]:
        from hpctl.doctor import local_checks
        return local_checks(cluster)

    def render(self, spec: Spec) -> Artifact:
        if uses_ray(spec.data):  # verl: a single-node Ray for the job (hpctl.backends.local_ray)
            from hpctl.backends import local_ray
            return local_ray.render_job(spec)
        results = spec.get("recipes.run.results_dir")
        nproc = devices_per_node(spec.data)
        python = spec.get("cluster.python") or sys.executable
        spec_path = f"{results}/job_spec.json"
        entry = entry_point(spec, results)
        ft = ft_launch.settings(spec)  # replica groups: one torchrun per group, each with its share
        argv = [python, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={nproc // ft.replica_groups if ft else nproc}", TEE_ALL, *entry.argv(spec_path)]
        secrets = secret_vars(spec)
        command = ft_launch.local_command(ft, python, argv, f"{results}/hpctl") if ft else shlex.join(argv)
        text = render("local.sh.j2", job=spec.job_name, recipe=spec.recipe_name, spec_path=spec_path,
                      env=sorted(job_env(spec), key=lambda v: v.name), rank_prefix=rank_prefix_env(),
                      command=command, exit_dir=f"{results}/hpctl",
                      clone=entry.clone.script() if entry.clone else None, pythonpath=entry.pythonpath)
        return Artifact(
            kind="command", text=text, language="bash",
            files={spec_path: json.dumps(spec.public_data(), indent=2, sort_keys=True) + "\n",
                   f"{results}/hpctl/launch.sh": text},
            env=secrets, logs={"stdout": f"{results}/logs/stdout.log"}, results_dir=results)

    def submit(self, artifact: Artifact, secrets: dict[str, str], tag: JobTag | None = None) -> str:
        for path, content in artifact.files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content)
        log = Path(artifact.logs["stdout"])
        log.parent.mkdir(parents=True, exist_ok=True)
        script = f"{artifact.results_dir}/hpctl/launch.sh"
        with open(log, "ab") as out:
            proc = subprocess.Popen(["bash", script], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=artifact.results_dir,
                                    env={**os.environ, **secrets, **({TAG_ENV: tag.comment} if tag else {})})
        return str(proc.pid)

    def find_tagged(self, artifact: Artifact, tag: JobTag) -> list[TaggedJob]:
        """The running launch scripts (session leaders: submit starts each in its own session)
        whose environment carries the tag, oldest first. Ended ones are gone from /proc."""
        wanted = f"{TAG_ENV}=".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if stat[3] != entry.name or stat[0] == "Z":  # fields 3 (state) and 6 (session id)
                    continue
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError):
                continue  # gone meanwhile, or another user's
            seen = next((JobTag.from_comment(v[len(wanted):].decode(errors="replace"))
                         for v in environ if v.startswith(wanted)), None)
            if seen is not None and seen.value == tag.value:
                found.append((int(stat[19]), TaggedJob(entry.name, RUNNING, seen.spec)))  # field 22: start time
        return [job for _, job in sorted(found, key=lambda f: f[0])]

    def _markers(self, record: JobRecord) -> tuple[Path, Path]:
        d = Path(record.results_dir) / "hpctl"
        return d / f"exit.{record.job_id}", d / f"cancelled.{record.job_id}"

    def describe(self, record: JobRecord) -> JobStatus:
        exit_file, cancelled = self._markers(record)
        metrics = last_metrics(record.results_dir)
        if cancelled.exists():
            return JobStatus(CANCELLED, backend_state="cancelled", metrics=metrics)
        if exit_file.exists():
            try:
                code = int(exit_file.read_text().strip())
            except ValueError:
                return JobStatus(UNKNOWN, detail=f"unreadable exit marker {exit_file}", metrics=metrics)
            return JobStatus(SUCCEEDED if code == 0 else FAILED, exit_code=code, backend_state="exited",
                             metrics=metrics)
        if _running(int(record.job_id)):
            return JobStatus(RUNNING, backend_state="running", metrics=metrics)
        return JobStatus(FAILED, backend_state="vanished", detail="the process ended without an exit code",
                         metrics=metrics)

    def logs(self, record: JobRecord, follow: bool = False, rank: int | None = None) -> Iterator[str]:
        return log_lines([Path(record.logs["stdout"])], follow,
                         lambda: self.describe(record).state in TERMINAL, rank)

    def cancel(self, record: JobRecord, grace: float = GRACE_SECONDS) -> None:
        pid = int(record.job_id)
        if not _running(pid):
            return
        _, cancelled = self._markers(record)
        cancelled.parent.mkdir(parents=True, exist_ok=True)
        cancelled.write_text("cancelled\n")
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.2)
        if _running(pid):
            _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie's exit was not yet reaped by its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


BACKEND = LocalBackend()
