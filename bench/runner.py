"""Running the contenders as real processes, the way a user would, and timing them from outside.

CPU time comes from getrusage(RUSAGE_CHILDREN) deltas around each run: it covers the child and
every descendant it waited for (torchrun's workers included), which in-process timers cannot.

The machine may be shared. Each run also records the foreign load: CPU time the whole machine
spent (/proc/stat) minus what the run and the bench spent, per second of the run, in cores. A
single process with two OpenMP threads that loses a core to someone else waits at every barrier
and runs several times slower, so throughput runs can wait for a quiet machine first and be
repeated when they were disturbed (`steady`); the foreign load of every kept run is reported.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class RunFailed(RuntimeError):
    """A contender exited non-zero: the bench reports the section as an error with its output."""


@dataclass
class Timed:
    wall_s: float
    cpu_s: float  # user + system of the child and its waited-for descendants
    foreign_cpu_s: float  # CPU time of everything else on the machine meanwhile
    stdout: str = ""
    stderr: str = ""
    lines: list[tuple[float, str]] | None = None  # stamped stdout lines (stamped_lines)

    @property
    def foreign_cores(self) -> float:
        """The average number of cores others kept busy during the run."""
        return self.foreign_cpu_s / self.wall_s if self.wall_s > 0 else 0.0


class _Meter:
    """Wall, own-children CPU and whole-machine CPU between start and stop."""

    def __init__(self) -> None:
        self.wall, self.machine = time.perf_counter(), machine_busy_s()
        self.children, self.me = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)

    def stop(self, **output) -> Timed:
        wall = time.perf_counter() - self.wall
        machine = machine_busy_s() - self.machine
        children, me = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        cpu = (children.ru_utime - self.children.ru_utime) + (children.ru_stime - self.children.ru_stime)
        mine = (me.ru_utime - self.me.ru_utime) + (me.ru_stime - self.me.ru_stime)
        return Timed(wall, cpu, max(machine - cpu - mine, 0.0), **output)


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores; 0 where /proc is absent)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit_s: float = 30, window_s: float = 2.0, max_cores: float = 0.2) -> float:
    """Wait (at most limit_s) for a window in which others use at most max_cores; return the wait."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        before = machine_busy_s()
        time.sleep(window_s)
        if (machine_busy_s() - before) / window_s <= max_cores:
            break
    return time.perf_counter() - start


def steady(measure, *, patient: bool, retries: int = 2, disturbed_cores: float = 0.3):
    """Call measure() -> (value, Timed); when patient, first wait for a quiet machine, and repeat
    a run that others disturbed (up to `retries` times), keeping the least disturbed attempt.
    Returns (value, timed, attempts)."""
    best = None
    for attempt in range(1, (retries if patient else 0) + 2):
        if patient:
            wait_quiet()
        value, timed = measure()
        if best is None or timed.foreign_cores < best[1].foreign_cores:
            best = (value, timed)
        if timed.foreign_cores <= disturbed_cores:
            break
    return best[0], best[1], attempt


def env(**extra: str) -> dict[str, str]:
    """The environment for every contender: this repository importable, no Python buffering."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), e.get("PYTHONPATH", "")) if p)
    e["PYTHONUNBUFFERED"] = "1"
    e.update(extra)
    return e


def run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 900, extra_env: dict[str, str] | None = None,
        ok_codes: tuple[int, ...] = (0,)) -> Timed:
    """Run `cmd` to completion; raise RunFailed (with the tail of its output) on a bad exit code."""
    meter = _Meter()
    proc = subprocess.run(cmd, cwd=cwd or REPO, env=env(**(extra_env or {})), capture_output=True, text=True,
                          timeout=timeout)
    timed = meter.stop(stdout=proc.stdout, stderr=proc.stderr)
    if proc.returncode not in ok_codes:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RunFailed(f"{' '.join(cmd[:6])} ... exited {proc.returncode}:\n{tail}")
    return timed


def stamped_lines(cmd: list[str], *, timeout: float = 900) -> Timed:
    """Run `cmd`; `.lines` holds each stdout line with the wall-clock time it arrived.

    For timing a process from outside by its log lines (the trainer flushes one per step)."""
    meter = _Meter()
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            lines = [(time.perf_counter(), line.rstrip("\n")) for line in proc.stdout]
            code = proc.wait()
        finally:
            killer.cancel()
        if code != 0:
            err.seek(0)
            tail = ("\n".join(line for _, line in lines) + err.read())[-3000:]
            raise RunFailed(f"{' '.join(cmd[:6])} ... exited {code}:\n{tail}")
    return meter.stop(lines=lines)


def torchrun(nproc: int, module: str, *args: str) -> list[str]:
    """The torchrun command line hpctl's local backend uses: one node, a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *args]


def python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def console_script(name: str) -> str:
    """An entry point installed beside the running interpreter (hpctl, torchx)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not installed in {path.parent}")
    return str(path)
