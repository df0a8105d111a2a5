"""Running the contenders as real processes, the way a user would, and timing them from outside.

CPU time comes from getrusage(RUSAGE_CHILDREN) deltas around each run: it covers the child and
every descendant it waited for (torchrun's workers included), which in-process timers cannot.
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
    stdout: str
    stderr: str


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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd or REPO, env=env(**(extra_env or {})), capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in ok_codes:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RunFailed(f"{' '.join(cmd[:6])} ... exited {proc.returncode}:\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu, proc.stdout, proc.stderr)


def stamped_lines(cmd: list[str], *, timeout: float = 900) -> list[tuple[float, str]]:
    """Run `cmd` and return each stdout line with the wall-clock time it arrived.

    For timing a process from outside by its log lines (the trainer flushes one per step)."""
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
    return lines


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
