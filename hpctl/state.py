"""The record of what was applied: `.hpctl/state.json` in the workspace, written atomically
under a lock.

The state has a `lineage` (a random id fixed at creation) and a `serial` bumped by every write,
so a saved plan can tell that state moved on since it was made. Writers take a lock file holding
pid, host, command and time; a second writer waits up to a timeout and then fails naming the
holder; a lock left by a dead process on this host is broken with a warning.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hpctl.records import JobRecord
from hpctl.errors import HpctlError, Origin
from hpctl.faults import crash_if
from hpctl.suggest import did_you_mean

VERSION = 1


def open_private(path: Path) -> IO[str]:
    """Open a file for writing, readable by its owner only (0600), whatever the umask: plans and
    state hold the job's spec, never its secrets, but they name paths and hosts a team keeps in."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    return os.fdopen(fd, "w")


@dataclass
class State:
    path: Path
    serial: int = 0
    lineage: str = ""
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    # Jobs an apply began to submit and has not recorded yet (name -> when): only these can have
    # been submitted and lost, so only for these does a plan ask the scheduler (apply.adopt_lost).
    submitting: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "State":
        if not path.exists():
            return cls(path)
        try:
            with _no_cyclic_gc():
                doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise HpctlError(f"state file is unreadable: {e}", origin=Origin(str(path)),
                             hint="restore it from its backup (state.json.backup) or move it away") from None
        if doc.get("version") != VERSION:
            raise HpctlError(f"state file version {doc.get('version')} is not supported",
                             origin=Origin(str(path)), expected=str(VERSION))
        jobs = {k: JobRecord.from_json(v) for k, v in doc.get("jobs", {}).items()}
        return cls(path, doc.get("serial", 0), doc.get("lineage", ""), jobs, dict(doc.get("submitting", {})))

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "serial": self.serial, "lineage": self.lineage,
                "submitting": dict(sorted(self.submitting.items())),
                "jobs": {k: v.to_json() for k, v in sorted(self.jobs.items())}}

    def job(self, name: str) -> JobRecord:
        if name not in self.jobs:
            raise HpctlError(f"no job '{name}' in state", key="JOB", origin=Origin(str(self.path)),
                             hint=did_you_mean(name, self.jobs) or "run `hpctl state list` to see the jobs")
        return self.jobs[name]

    def begin_submit(self, job: str) -> str:
        """Mark `job` as being submitted, on disk before the scheduler sees it, and return the
        lineage its tag names (made if this state never was). Recording the job clears the mark
        (`recorded`); a mark left behind says an apply died around its submission, and is what
        makes a later plan look for the job on the scheduler. Not a change of what was applied:
        the serial stays."""
        self.lineage = self.lineage or str(uuid.uuid4())
        self.submitting[job] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write()
        return self.lineage

    def forget(self, job: str) -> None:
        """Drop `job`'s record and any submission mark: a forgotten job is never adopted again."""
        del self.jobs[job]
        self.submitting.pop(job, None)

    def recorded(self, job: str, record: JobRecord) -> None:
        """`job`'s record, its submission mark cleared; the caller saves."""
        self.jobs[job] = record
        self.submitting.pop(job, None)

    def save(self) -> None:
        """Write the state with its serial bumped (see _write)."""
        self.serial += 1
        if not self.lineage:
            self.lineage = str(uuid.uuid4())
        self._write(crash_point="during_state_write")

    def _write(self, crash_point: str | None = None) -> None:
        """Atomic write: temp file, fsync, keep the previous copy as a backup, rename. The state
        file exists at every moment: the backup is a second link to the previous file, never a
        rename of it, so a crash anywhere in here leaves the previous state where it was."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        # One job per line: indent=2 would take json's pure-Python encoder, seconds for 1,000 jobs.
        with _no_cyclic_gc():
            doc = self.to_json()
            jobs = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in doc.pop("jobs").items())
        head = json.dumps(doc, sort_keys=True)[:-1]
        with open_private(tmp) as f:
            f.write(f'{head}, "jobs": {{\n{jobs}\n}}}}\n' if jobs else f'{head}, "jobs": {{}}}}\n')
            f.flush()
            os.fsync(f.fileno())
        if self.path.exists():
            backup = self.path.with_name(self.path.name + ".backup")
            link = self.path.with_name(f".{self.path.name}.{os.getpid()}.backup")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            try:
                os.link(self.path, link)
            except OSError:  # a filesystem without hard links: a copy does as well
                shutil.copy2(self.path, link)
            os.replace(link, backup)
            with contextlib.suppress(FileNotFoundError):  # rename(2) does nothing when the backup
                os.unlink(link)  # already is this file (a write killed before its rename)
        if crash_point:
            crash_if(crash_point)
        os.replace(tmp, self.path)
        with contextlib.suppress(OSError):
            dfd = os.open(self.path.parent, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Temp files of writers killed mid-write (`.state.json.<pid>.tmp` or `.backup`): the
        state they were writing never became the state, so they are only litter. A live pid's
        are another writer's on this host and kept."""
        for leftover in self.path.parent.glob(f".{self.path.name}.*"):
            pid = leftover.name[len(self.path.name) + 2:].partition(".")[0]
            if leftover.suffix in (".tmp", ".backup") and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    leftover.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def locked(path: Path, timeout: float = 10.0, command: str = "") -> Iterator[State]:
    """Hold the state lock, yield the freshly loaded state; the caller saves what it changes."""
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or " ".join(sys.argv),
          "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            break
        except FileExistsError:
            holder = _read_holder(lock)
            if holder and holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) \
                    and not _alive(holder["pid"]):
                print(f"warning: breaking a stale state lock left by pid {holder['pid']} "
                      f"({holder.get('command', '?')})", file=sys.stderr)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
                continue
            if time.monotonic() >= deadline:
                who = (f"pid {holder.get('pid')} on {holder.get('host')} running '{holder.get('command')}' "
                       f"since {holder.get('time')}") if holder else "another process"
                raise HpctlError(f"state is locked by {who}", origin=Origin(str(lock)),
                                 hint="wait for it to finish, or raise --lock-timeout")
            time.sleep(0.05)
    try:
        yield State.load(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def _read_holder(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Reading or writing a big state makes containers by the hundred thousand: each allocation
    burst starts a cyclic-GC pass over everything built so far, so the time per job grew with the
    job count. JSON makes no cycles, so the collector is paused meanwhile (then resumed as it was)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
