"""The Slurm backend: a self-contained sbatch script, and status from squeue, scontrol, sacct.

`render` turns the spec into one bash script (templates/slurm.sbatch.j2) that writes the resolved
spec into the results dir and launches one torchrun per node through srun. The other methods talk
to the Slurm client commands of the machine hpctl runs on (a login node).

Finished jobs leave squeue and scontrol after MinJobAge and sacct needs slurmdbd, so the script
also writes an exit marker, `<results_dir>/logs/<jobid>.exit`, that `describe` falls back to.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapter.rank_prefix import TEE_ALL, rank_prefix_env
from hpctl import ft_launch
from hpctl.backends.base import (
    CANCELLED, FAILED, NOT_SUBMITTED, PENDING, RUNNING, SUCCEEDED, TERMINAL, UNKNOWN,
    Artifact, Backend, JobRecord, JobStatus, TaggedJob,
)
from hpctl.backends.common import (
    JobTag, job_env, last_metrics, log_lines, positive_int, secret_vars)
from hpctl.devices import uses_gpus
from hpctl.engines import uses_ray
from hpctl.entry import entry_point
from hpctl.errors import HpctlError
from hpctl.resources import builtin_root
from hpctl.spec import Spec
from hpctl.templating import render, shquote, tojson

TEMPLATE = "slurm.sbatch.j2"
COMMAND_TIMEOUT_S = 60
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Slurm's base job states -> hpctl's. Since 23.02 `job_state` is a list: a base state plus flags.
BASE_STATES = {
    "PENDING": PENDING, "RUNNING": RUNNING, "SUSPENDED": RUNNING, "COMPLETED": SUCCEEDED,
    "CANCELLED": CANCELLED, "FAILED": FAILED, "TIMEOUT": FAILED, "NODE_FAIL": FAILED,
    "PREEMPTED": FAILED, "BOOT_FAIL": FAILED, "DEADLINE": FAILED, "OUT_OF_MEMORY": FAILED,
}
# Flags, which 22.05 also shows alone as the job's state (COMPLETING, REQUEUED, ...).
FLAG_STATES = {
    "REQUEUED": PENDING, "REQUEUE_HOLD": PENDING, "REQUEUE_FED": PENDING, "RESV_DEL_HOLD": PENDING,
    "CONFIGURING": PENDING, "COMPLETING": RUNNING, "STAGE_OUT": RUNNING, "SIGNALING": RUNNING,
    "RESIZING": RUNNING, "STOPPED": RUNNING, "SPECIAL_EXIT": FAILED, "REVOKED": CANCELLED,
}
# A requeue in progress is never terminal, whatever base state comes with it.
REQUEUE_FLAGS = ("REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED")


# --------------------------------------------------------------------------------------------
# render


def _one_line(value: Any, key: str) -> str:
    """A value for an #SBATCH line: sbatch reads one line, so control characters are refused."""
    text = str(value)
    if CONTROL.search(text):
        raise HpctlError("a value on an #SBATCH line must be one line without control characters",
                         key=key, found=repr(text), hint="remove the newline or tab from the value")
    return text


def _exports(spec: Spec) -> list[tuple[str, str, str | None, str | None]]:
    """(name, value, secret reference, note) for the job's environment (hpctl.backends.common)."""
    return [(v.name, v.value, f'"${{{v.secret}}}"' if v.secret else None, v.note) for v in job_env(spec)]


def _covered(path: str, mounts: list[str]) -> bool:
    """Whether a container mount already makes `path` visible at the same place."""
    for mount in mounts:
        parts = mount.split(":")
        dst = parts[1] if len(parts) > 1 else parts[0]
        if path == dst or path.startswith(dst.rstrip("/") + "/"):
            return True
    return False


def container_args(spec: Spec, results_dir: str, workdir: str | None) -> list[str]:
    """srun's pyxis options that run a step in the job's container: its image, its comma-joined
    mounts (results dir and workdir added when needed) and the workdir; none without a container.
    Every step of the job takes exactly these: the training step, the fault-tolerance lighthouse
    and groups, and verl's Ray steps.

    `container.mounts` are pyxis's "src:dst[:flags]"; HyperPod's `container_mounts` may be bare
    paths, mounted at the same path.
    """
    image = spec.get("cluster.container.image") or spec.get("container")
    if not image:
        return []
    mounts = [str(m) for m in spec.get("cluster.container.mounts") or [] if m not in (None, "")]
    mounts += [str(m) if ":" in str(m) else f"{m}:{m}"
               for m in spec.get("cluster.container_mounts") or [] if m not in (None, "")]
    for path in (results_dir, workdir):
        if path and not _covered(path, mounts):
            mounts.append(f"{path}:{path}")
    for mount in mounts:
        if "," in mount:
            raise HpctlError("a container mount cannot contain ','", key="cluster.container.mounts", found=repr(mount))
    args = [f"--container-image={image}"]
    args += [f"--container-mounts={','.join(mounts)}"] if mounts else []
    args += [f"--container-workdir={workdir}"] if workdir else []
    return args


def _workdir(spec: Spec) -> str | None:
    """cluster.workdir; unset, the hpctl checkout when `adapter/` sits in it (a wheel install
    has the adapter package in site-packages instead, so nothing is needed)."""
    if spec.get("cluster.workdir"):
        return str(spec.get("cluster.workdir"))
    root = builtin_root()
    return str(root) if (root / "adapter").is_dir() else None


def _results_dir(spec: Spec) -> str:
    results_dir = spec.get("recipes.run.results_dir")
    if not results_dir and spec.get("base_results_dir"):
        results_dir = f"{str(spec.get('base_results_dir')).rstrip('/')}/{spec.job_name}"
    if not results_dir or not str(results_dir).startswith("/"):
        raise HpctlError("the Slurm backend needs an absolute results directory", key="recipes.run.results_dir",
                         expected="an absolute path", found=repr(results_dir))
    results_dir = str(results_dir).rstrip("/") or "/"
    if "\\" in results_dir:
        raise HpctlError("a backslash in the results dir turns off sbatch's %j in log names",
                         key="recipes.run.results_dir", found=repr(results_dir))
    return results_dir


def _directives(spec: Spec, results_dir: str, workdir: str | None, auto_resume: dict[str, Any]) -> list[str]:
    """The #SBATCH lines, each value quoted the way sbatch parses them (shell-like)."""
    cluster = spec.cluster

    def opt(flag: str, value: Any, key: str) -> str:
        return f"--{flag}={shquote(_one_line(value, key))}"

    logs = _one_line(results_dir, "recipes.run.results_dir").replace("%", "%%") + "/logs"
    merged = cluster.get("stderr_to_stdout") is not False
    lines = [
        opt("job-name", f"{cluster.get('job_name_prefix') or ''}{spec.job_name}", "recipes.run.name"),
        f"--nodes={positive_int(spec, 'recipes.trainer.num_nodes', 1)}",
        "--ntasks-per-node=1",
    ]
    if uses_gpus(spec.data):
        gpus = cluster.get("gpus_per_node") or positive_int(spec, "recipes.trainer.devices", 1)
        lines.append(opt("gpus-per-node", gpus, "cluster.gpus_per_node"))
    if cluster.get("cpus_per_task"):
        lines.append(opt("cpus-per-task", cluster["cpus_per_task"], "cluster.cpus_per_task"))
    time_limit = cluster.get("time") or spec.get("recipes.run.time_limit")
    if time_limit:
        lines.append(opt("time", time_limit, "cluster.time" if cluster.get("time") else "recipes.run.time_limit"))
    lines.append(f"--output={shquote(logs + '/%j.out')}")
    lines.append(f"--error={shquote(logs + ('/%j.out' if merged else '/%j.err'))}")
    lines.append("--open-mode=append")
    lines.append(opt("chdir", workdir or results_dir, "cluster.workdir"))
    if cluster.get("exclusive"):
        lines.append("--exclusive")
    for name in ("mem", "partition", "account", "qos", "constraint", "reservation"):
        if cluster.get(name) not in (None, ""):
            lines.append(opt(name, cluster[name], f"cluster.{name}"))
    if auto_resume["enabled"]:
        lines.append("--requeue")
        lines.append(f"--signal=B:USR1@{auto_resume['signal_seconds']}")
    return lines


def _ft_block(ft: Any, spec: Spec, container: list[str], srun_args: list[str], program: tuple[str, ...]) -> str:
    """The launch under trainer.fault_tolerance (hpctl.ft_launch), with this script's srun options."""
    step_args = [*container, *srun_args]
    tail = [TEE_ALL, *[shquote(a) for a in program], "--config", '"$HPCTL_SPEC"']
    return ft_launch.slurm_block(ft, positive_int(spec, "recipes.trainer.num_nodes", 1),
                                 positive_int(spec, "recipes.trainer.devices", 1),
                                 spec.cluster.get("python") or "python3", step_args, tail)


def _auto_resume(spec: Spec) -> dict[str, Any]:
    cfg = spec.get("cluster.auto_resume") or {}
    enabled = bool(cfg.get("enabled"))
    return {
        "enabled": enabled,
        "max_restarts": positive_int(spec, "cluster.auto_resume.max_restarts", 3) if enabled else 0,
        "signal_seconds": positive_int(spec, "cluster.auto_resume.signal_seconds", 300) if enabled else 0,
    }


def script_path(results_dir: str, job_name: str) -> str:
    """Where submit writes the script: `<results_dir>/hpctl/<job>.sbatch` (name made path-safe)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", job_name).lstrip(".") or "job"
    return f"{results_dir}/hpctl/{safe}.sbatch"


# --------------------------------------------------------------------------------------------
# status parsing (pure functions, tested against recorded outputs of several Slurm versions)


@dataclass
class SlurmJob:
    """What one Slurm source says about a job, before mapping to hpctl's states."""

    states: list[str]
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    restarts: int | None = None

    @property
    def state(self) -> str:
        """hpctl's state for Slurm's state list."""
        if any(flag in self.states for flag in REQUEUE_FLAGS):
            return PENDING
        for table in (BASE_STATES, FLAG_STATES):
            for slurm_state in self.states:
                if slurm_state in table:
                    return table[slurm_state]
        return UNKNOWN


def _number(value: Any) -> int | None:
    """A number from either shape: a plain int (<= 22.05) or {"set", "infinite", "number"} (>= 23.02)."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _exit(value: Any) -> tuple[int | None, int | None]:
    """(exit code, signal) from squeue's exit_code: a raw wait status (22.05) or a verbose object."""
    if isinstance(value, dict):
        code = _number(value.get("return_code"))
        signal = _number((value.get("signal") or {}).get("id")) if isinstance(value.get("signal"), dict) else None
        return code, signal or None
    raw = _number(value)
    if raw is None:
        return None, None
    return (raw >> 8) & 0xFF, (raw & 0x7F) or None


def parse_squeue_json(text: str, job_id: str) -> SlurmJob | None:
    """The job in `squeue --json` output; 22.05 ignores -j with --json, so filter by id here."""
    return parse_squeue_jobs(text).get(str(job_id))


def parse_squeue_jobs(text: str) -> dict[str, SlurmJob]:
    """Every job in `squeue --json` output by id; output that is not squeue's JSON gives none."""
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    jobs = doc.get("jobs") if isinstance(doc, dict) else None
    found: dict[str, SlurmJob] = {}
    for job in jobs if isinstance(jobs, list) else []:
        if not isinstance(job, dict) or _number(job.get("job_id")) is None:
            continue
        state = job.get("job_state")
        states = [str(s) for s in state] if isinstance(state, list) else [str(state)] if state else []
        code, signal = _exit(job.get("exit_code"))
        reason = job.get("state_reason")
        found.setdefault(str(_number(job.get("job_id"))), SlurmJob(
            states, code, signal, reason if reason not in (None, "", "None") else None,
            _number(job.get("restart_cnt"))))
    return found


def parse_scontrol(text: str) -> SlurmJob | None:
    """`scontrol show job ID` text: JobState=, ExitCode=code:signal, Reason=, Restarts=."""
    fields = dict(re.findall(r"(?:^|\s)([A-Za-z/:]+)=(\S*)", text))
    if "JobState" not in fields:
        return None
    code = signal = None
    match = re.fullmatch(r"(\d+):(\d+)", fields.get("ExitCode", ""))
    if match:
        code, signal = int(match.group(1)), int(match.group(2)) or None
    restarts = int(fields["Restarts"]) if fields.get("Restarts", "").isdigit() else None
    reason = fields.get("Reason") if fields.get("Reason") not in (None, "None") else None
    return SlurmJob([fields["JobState"]], code, signal, reason, restarts)


def parse_scontrol_jobs(text: str) -> dict[str, SlurmJob]:
    """`scontrol show job` of every job: records start with JobId= and are parsed one by one."""
    found = {}
    for chunk in re.split(r"(?m)^(?=\s*JobId=)", text):
        match = re.match(r"\s*JobId=(\d+)", chunk)
        job = parse_scontrol(chunk) if match else None
        if job is not None:
            found.setdefault(match.group(1), job)
    return found


def parse_sacct(text: str, job_id: str) -> SlurmJob | None:
    """`sacct -n -P -X -o JobID,State,ExitCode,Restarts`: the allocation line of the job."""
    return parse_sacct_jobs(text).get(str(job_id))


def parse_sacct_jobs(text: str) -> dict[str, SlurmJob]:
    """Every job's allocation line of that sacct output, by id (the first line of each id)."""
    found: dict[str, SlurmJob] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or parts[0] in found:
            continue
        state = parts[1].split()[0] if parts[1].strip() else ""  # "CANCELLED by 0"
        code = signal = None
        match = re.fullmatch(r"(\d+):(\d+)", parts[2])
        if match:
            code, signal = int(match.group(1)), int(match.group(2)) or None
        restarts = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None
        found[parts[0]] = SlurmJob([state], code, signal, None, restarts)
    return found


def parse_tagged(text: str, tag: JobTag) -> list[TaggedJob]:
    """The jobs of `squeue --format=%i|%T|%k` output whose comment carries `tag`, oldest first;
    array tasks (`12_3`) are not hpctl's and are skipped."""
    found = []
    for line in text.splitlines():
        job_id, _, rest = line.strip().partition("|")
        state, _, comment = rest.partition("|")
        seen = JobTag.from_comment(comment)
        if seen is not None and seen.value == tag.value and job_id.isdigit():
            found.append(TaggedJob(job_id, SlurmJob([state]).state, seen.spec))
    return sorted(found, key=lambda j: int(j.job_id))


def read_exit_marker(results_dir: str, job_id: str) -> int | None:
    """The srun exit code the script wrote at its end, or None when there is none (yet)."""
    try:
        return int(Path(results_dir, "logs", f"{job_id}.exit").read_text().strip())
    except (OSError, ValueError):
        return None


def _exit_code(job: SlurmJob, marker: int | None) -> int | None:
    """A finished job's exit code; killed by a signal counts as 128 + signal, like a shell."""
    if job.exit_code:
        return job.exit_code
    if job.signal:
        return 128 + job.signal
    return marker if marker is not None else job.exit_code


def to_status(job: SlurmJob | None, marker: int | None) -> JobStatus:
    """hpctl's status from what Slurm says, falling back to the exit marker."""
    if job is None:
        if marker is None:
            return JobStatus(UNKNOWN, detail="Slurm no longer knows the job (finished jobs leave squeue "
                                             "after MinJobAge) and it left no exit marker")
        return JobStatus(SUCCEEDED if marker == 0 else FAILED, exit_code=marker, detail="from the exit marker")
    state = job.state
    exit_code = _exit_code(job, marker) if state in (SUCCEEDED, FAILED) else None
    details = [f"reason {job.reason}"] if job.reason else []
    if job.restarts:
        details.append(f"restarts {job.restarts}")
    if job.signal and state in (FAILED, CANCELLED):
        details.append(f"signal {job.signal}")
    return JobStatus(state, exit_code=exit_code, backend_state=",".join(job.states) or None,
                     detail="; ".join(details) or None)


# --------------------------------------------------------------------------------------------
# the backend


# slurmctld down or restarting: the request never reached it, so asking again is safe. Each
# failed attempt already took the client about MessageTimeout seconds (it retries the connect).
UNREACHABLE = re.compile(r"Unable to contact slurm controller|Connection refused|Zero Bytes were transmitted",
                         re.IGNORECASE)
# The request may have reached it: an sbatch may have been accepted although no reply came.
NO_REPLY = re.compile(r"Socket timed out|Transport endpoint|timed out on send/recv|no answer within", re.IGNORECASE)
RETRY_DELAYS_S = (1.0, 2.0, 4.0)  # backoff between attempts while slurmctld does not answer
TIMED_OUT = 124  # the exit status `_run` gives a client it stopped after COMMAND_TIMEOUT_S (as timeout(1) does)


def _load_error(proc: subprocess.CompletedProcess[str]) -> str | None:
    """What `squeue --json` says when it could not load the jobs: 22.05 then exits 0, prints
    nothing on stderr and reports it in the document's `errors` (slurmctld down gives "Failed
    while looking for jobs" from slurm_load_jobs), with an empty job list."""
    if proc.returncode != 0 or "--json" not in proc.args:
        return None
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return None
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not errors or doc.get("jobs"):
        return None
    return "; ".join(f"{e.get('description') or e.get('error')} ({e.get('source')})" if isinstance(e, dict) else str(e)
                     for e in errors)


def _unreachable(proc: subprocess.CompletedProcess[str] | None) -> bool:
    """Whether slurmctld could not be reached: the request never arrived, so it is safe to repeat."""
    if proc is None:
        return False
    return (proc.returncode != 0 and bool(UNREACHABLE.search(proc.stderr + proc.stdout))) or bool(_load_error(proc))


def _no_answer(proc: subprocess.CompletedProcess[str] | None) -> bool:
    """Whether slurmctld gave no answer at all: unreachable, or no reply in time (when it hangs)."""
    return _unreachable(proc) or (proc is not None and proc.returncode != 0 and bool(NO_REPLY.search(proc.stderr)))


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    """What the client printed about its failure, for messages."""
    return proc.stderr.strip() or _load_error(proc) or proc.stdout.strip()


def _run(argv: list[str], retry: bool = True, **kw: Any) -> subprocess.CompletedProcess[str] | None:
    """Run a Slurm client; None when it is not installed. While slurmctld cannot be reached, try
    again after each of RETRY_DELAYS_S (a restart takes seconds), saying so on stderr. A client
    that does not finish within COMMAND_TIMEOUT_S (slurmctld hangs) is stopped and not retried:
    it gets exit status TIMED_OUT and a "no answer within" message (NO_REPLY)."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    name = Path(argv[0]).name
    delays = (*RETRY_DELAYS_S, None) if retry else (None,)
    for attempt, delay in enumerate(delays, 1):
        try:
            proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, **kw)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, TIMED_OUT, "", f"{name}: no answer within {COMMAND_TIMEOUT_S} s "
                                               "(slurmctld may hang); stopped")
        except OSError as e:
            return subprocess.CompletedProcess(argv, 127, "", f"{name}: {e}")
        if delay is None or not _unreachable(proc):
            return proc
        print(f"hpctl: {name}: slurmctld did not answer ({_said(proc)}); "
              f"trying again in {delay:g} s (attempt {attempt + 1} of {len(delays)})", file=sys.stderr)
        time.sleep(delay)
    return proc


def _sbatch() -> str:
    exe = shutil.which("sbatch")
    if exe is None:
        raise HpctlError("sbatch is not on PATH", hint="run hpctl on a Slurm login node; "
                         "`hpctl doctor --cluster NAME` checks the setup")
    return exe


def _job_name(script: str) -> str:
    """The --job-name of a written sbatch script, for the hint after a lost reply."""
    match = re.search(r"^#SBATCH --job-name=(.*)$", Path(script).read_text(), re.MULTILINE)
    return (shlex.split(match.group(1)) or [""])[0] if match else Path(script).stem


class Unreachable(Exception):
    """slurmctld did not answer a status query, even after the retries."""


def _log_files(record: JobRecord) -> list[Path]:
    """Absolute log paths of a job: stdout, and stderr when the script keeps it apart."""
    logs = record.logs or {"stdout": f"{record.results_dir}/logs/%j.out"}
    names = ["stdout"] + (["stderr"] if logs.get("stderr") and logs["stderr"] != logs["stdout"] else [])
    return [Path(logs[n].replace("%j", record.job_id)) for n in names]


def _write_files(artifact: Artifact) -> None:
    for path, text in artifact.files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


class SlurmBackend(Backend):
    name = "slurm"

    def doctor(self, cluster: dict[str, Any], general: dict[str, Any]) -> list[Any]:
        from hpctl.doctor import slurm_checks
        return slurm_checks(cluster)

    def fault_tolerance(self, spec: Spec, ft: Any) -> tuple[str, str]:
        return ft_launch.lighthouse_address(ft, "<first node of the allocation>"), "its own srun restart loop"

    def preflight(self, spec: Spec) -> list[Any]:
        from hpctl.slurm_docker import check  # HyperPod's slurm_docker_cfg: refused where pyxis ignores it
        return check(spec)

    def render(self, spec: Spec) -> Artifact:
        if uses_ray(spec.data):  # verl: a Ray cluster across the allocation (hpctl.backends.slurm_ray)
            from hpctl.backends import slurm_ray
            return slurm_ray.render_job(spec)
        results_dir = _results_dir(spec)
        cluster = spec.cluster
        workdir = _workdir(spec)
        auto_resume = _auto_resume(spec)
        env = secret_vars(spec)
        container = container_args(spec, results_dir, workdir)
        entry = entry_point(spec, results_dir)
        setup = cluster.get("setup") or []
        srun_args = [str(a) for a in cluster.get("srun_args") or [] if a is not None]
        ft = ft_launch.settings(spec)  # replica groups: a lighthouse step and one restarting step per group
        text = render(
            TEMPLATE,
            directives=_directives(spec, results_dir, workdir, auto_resume),
            results_dir=results_dir,
            secret_checks=[f'"${{{var}:?is not set: hpctl passes it at submit time}}"' for var in env],
            exports=_exports(spec),
            rank_prefix=rank_prefix_env(), tee=TEE_ALL,
            spec_json=tojson(spec.public_data(), indent=2),
            workdir=workdir,
            setup=[str(c) for c in setup if c not in (None, "")],
            container_args=container,
            srun_args=srun_args,
            python=cluster.get("python") or "python3",
            nproc_per_node=positive_int(spec, "recipes.trainer.devices", 1),
            auto_resume=auto_resume["enabled"],
            max_restarts=auto_resume["max_restarts"],
            signal_seconds=auto_resume["signal_seconds"],
            clone=entry.clone.script() if entry.clone else None,
            pythonpath=entry.pythonpath,
            program=[shquote(a) for a in entry.program],
            # the program's own arguments (git.script_args), else the spec, as the other backends pass them
            program_args=[shquote(a) for a in entry.args] if entry.args is not None else ['--config "$HPCTL_SPEC"'],
            fault_tolerance=_ft_block(ft, spec, container, srun_args, entry.program) if ft else None,
        )
        logs_dir = f"{results_dir}/logs"
        logs = {"stdout": f"{logs_dir}/%j.out", "torchrun": f"{logs_dir}/torchrun"}
        if cluster.get("stderr_to_stdout") is False:
            logs["stderr"] = f"{logs_dir}/%j.err"
        return Artifact(kind="sbatch", text=text, language="bash",
                        files={script_path(results_dir, spec.job_name): text},
                        env=env, logs=logs, results_dir=results_dir,
                        submit=cluster.get("slurm_create_submission_file_only") is not True)

    def submit(self, artifact: Artifact, secrets: dict[str, str], tag: JobTag | None = None) -> str:
        if not artifact.submit:  # HyperPod's slurm_create_submission_file_only: the script, no job
            _write_files(artifact)
            return NOT_SUBMITTED
        sbatch = _sbatch()
        missing = sorted(set(artifact.env) - set(secrets))
        if missing:
            raise HpctlError("secrets missing at submit time", found=", ".join(
                f"{artifact.env[v]} ({v})" for v in missing))
        _write_files(artifact)
        # slurmd opens --output before the script runs: the directory must exist already.
        Path(artifact.results_dir, "logs").mkdir(parents=True, exist_ok=True)
        script = next(p for p in artifact.files if p.endswith(".sbatch"))
        env = {**os.environ, **{k: secrets[k] for k in artifact.env}}
        comment = [f"--comment={tag.comment}"] if tag else []  # the command line wins over the script's
        proc = _run([sbatch, "--parsable", "--export=ALL", *comment, script], env=env)
        assert proc is not None  # _sbatch() found the client
        if _unreachable(proc):
            raise HpctlError(f"sbatch could not reach slurmctld ({1 + len(RETRY_DELAYS_S)} attempts); "
                             "nothing was submitted", found=_said(proc),
                             hint="is slurmctld up? try `scontrol ping`, then apply again")
        if proc.returncode != 0 and NO_REPLY.search(proc.stderr):
            raise HpctlError("sbatch got no reply from slurmctld: the job may or may not have been submitted",
                             found=_said(proc),
                             hint=f"apply again: it finds the job by its comment if slurmctld queued it, and "
                                  f"submits none twice (or check `squeue --name={shquote(_job_name(script))}`)")
        if proc.returncode != 0:
            raise HpctlError(f"sbatch failed (exit code {proc.returncode})", found=proc.stderr.strip(),
                             hint=f"the script is {script}")
        job_id = proc.stdout.strip().split(";")[0]
        if not re.fullmatch(r"\d+", job_id):
            raise HpctlError("sbatch did not print a job id", found=repr(proc.stdout.strip()))
        return job_id

    def find_tagged(self, artifact: Artifact, tag: JobTag) -> list[TaggedJob]:
        """One `squeue` of this user's jobs with their comments (`%k`); squeue lists only jobs not
        yet ended, which are the ones that may be adopted."""
        proc = _run(["squeue", "--me", "--noheader", "--format=%i|%T|%k"])
        if proc is None or _unreachable(proc) or proc.returncode != 0:
            raise HpctlError("squeue could not list the jobs, so a job submitted but not recorded cannot "
                             "be looked for", found=_said(proc) if proc else "squeue is not on PATH",
                             hint="is slurmctld up? try `scontrol ping`")
        return parse_tagged(proc.stdout, tag)

    def test_only(self, artifact: Artifact) -> str:
        """`sbatch --test-only` of the script (read from stdin, nothing written): Slurm's estimate."""
        try:
            proc = subprocess.run([_sbatch(), "--test-only"], input=artifact.text, capture_output=True,
                                  text=True, timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise HpctlError(f"sbatch --test-only did not answer within {COMMAND_TIMEOUT_S} s") from None
        out = (proc.stderr + proc.stdout).strip()
        if proc.returncode != 0:
            raise HpctlError("Slurm would reject this job (sbatch --test-only)", found=out)
        return out.splitlines()[-1].removeprefix("sbatch: ") if out else "sbatch --test-only: accepted"

    def query(self, job_id: str) -> SlurmJob | None:
        """What Slurm knows of the job: squeue, then scontrol, then sacct (when accounting runs).
        Raises Unreachable when slurmctld does not answer (after the retries)."""
        proc = _run(["squeue", "--json", "-j", job_id])
        if _no_answer(proc):
            raise Unreachable(_said(proc))
        if proc is not None and proc.returncode == 0:
            job = parse_squeue_json(proc.stdout, job_id)
            if job is not None:
                return job
        proc = _run(["scontrol", "show", "job", job_id])
        if proc is not None and proc.returncode == 0:
            job = parse_scontrol(proc.stdout)
            if job is not None:
                return job
        proc = _run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode,Restarts"])
        if proc is not None and proc.returncode == 0:
            return parse_sacct(proc.stdout, job_id)
        return None

    def query_many(self, job_ids: list[str]) -> dict[str, SlurmJob]:
        """What Slurm knows of many jobs, with at most one call of each client whatever their
        number: `squeue --json` of all jobs (else `scontrol show job`), then one `sacct -j` for
        the ids neither knows."""
        found: dict[str, SlurmJob] = {}
        proc = _run(["squeue", "--json"])
        if _no_answer(proc):
            raise Unreachable(_said(proc))
        if proc is not None and proc.returncode == 0:
            found = parse_squeue_jobs(proc.stdout)
        else:
            proc = _run(["scontrol", "show", "job"])
            if proc is not None and proc.returncode == 0:
                found = parse_scontrol_jobs(proc.stdout)
        wanted = set(job_ids)
        found = {k: v for k, v in found.items() if k in wanted}
        rest = sorted(wanted - set(found), key=int)
        if rest:
            proc = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(rest), "-o", "JobID,State,ExitCode,Restarts"])
            if proc is not None and proc.returncode == 0:
                found.update({k: v for k, v in parse_sacct_jobs(proc.stdout).items() if k in wanted})
        return found

    def describe(self, record: JobRecord) -> JobStatus:
        return self.describe_many([record])[record.name]

    def describe_many(self, records: list[JobRecord]) -> dict[str, JobStatus]:
        try:
            found = self.query_many([r.job_id for r in records if re.fullmatch(r"\d+", r.job_id)]) \
                if len(records) > 1 else {r.job_id: j for r in records if (j := self.query(r.job_id)) is not None}
        except Unreachable as e:
            detail = f"slurmctld did not answer ({e}); the job's state is unknown until it does"
            return {r.name: JobStatus(UNKNOWN, backend_state="unreachable", detail=detail,
                                      metrics=last_metrics(r.results_dir)) for r in records}
        out = {}
        for record in records:
            job = found.get(record.job_id)
            marker = read_exit_marker(record.results_dir, record.job_id) \
                if job is None or job.state in (SUCCEEDED, FAILED) else None  # only these read it
            status = to_status(job, marker)
            status.metrics = last_metrics(record.results_dir)
            out[record.name] = status
        return out

    def logs(self, record: JobRecord, follow: bool = False, rank: int | None = None) -> Iterator[str]:
        return log_lines(_log_files(record), follow, lambda: self.describe(record).state in TERMINAL, rank)

    def cancel(self, record: JobRecord) -> None:
        proc = _run(["scancel", record.job_id])
        if proc is None:
            raise HpctlError("scancel is not on PATH", hint="run hpctl on a Slurm login node")
        if _unreachable(proc):
            raise HpctlError(f"scancel {record.job_id}: slurmctld did not answer ({1 + len(RETRY_DELAYS_S)} "
                             "attempts); the job was not cancelled", found=_said(proc),
                             hint="try `scontrol ping`, then cancel again")
        if proc.returncode != 0 and NO_REPLY.search(proc.stderr):
            raise HpctlError(f"scancel {record.job_id}: no reply from slurmctld; the job may or may not be cancelled",
                             found=_said(proc), hint="`hpctl status` shows whether it still runs; cancel again if so")
        if proc.returncode != 0:
            raise HpctlError(f"scancel {record.job_id} failed", found=_said(proc))


BACKEND = SlurmBackend()
