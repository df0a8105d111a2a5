"""State: atomic writes, serial and lineage, the lock (waiting, naming the holder, stale locks)."""
from __future__ import annotations

import json
import multiprocessing as mp
import socket
import subprocess
import sys

import pytest

from hpctl.backends.base import JobRecord
from hpctl.errors import HpctlError
from hpctl.state import State, locked


def _record(name: str) -> JobRecord:
    return JobRecord(name=name, cluster="local", backend="local", job_id="1", spec_digest="d", spec={},
                     artifact={}, results_dir="/r", logs={}, applied_at="t")


def _writer(path: str, name: str, n: int) -> None:
    from pathlib import Path
    for i in range(n):
        with locked(Path(path), timeout=60) as st:
            st.jobs[f"{name}-{i}"] = _record(f"{name}-{i}")
            st.save()


def test_ten_concurrent_writers_never_corrupt_state(tmp_path):
    path = tmp_path / ".hpctl" / "state.json"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), f"w{w}", 5)) for w in range(10)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    st = State.load(path)
    assert len(st.jobs) == 50  # no write was lost
    assert st.serial == 50  # every write bumped the serial exactly once
    assert json.loads(path.read_text())["lineage"] == st.lineage
    assert not (path.parent / "state.json.lock").exists()
    assert not list(path.parent.glob(".state.json.*.tmp"))


def test_lineage_is_fixed_at_creation_and_serial_grows(tmp_path):
    path = tmp_path / "state.json"
    with locked(path) as st:
        st.save()
        lineage = st.lineage
    with locked(path) as st:
        assert st.lineage == lineage and st.serial == 1
        st.save()
    assert State.load(path).serial == 2
    assert (tmp_path / "state.json.backup").exists()


@pytest.mark.slow
def test_second_writer_times_out_naming_the_holder(tmp_path):
    path = tmp_path / "state.json"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from hpctl.state import locked\n"
        f"with locked(Path({str(path)!r}), command='holder-cmd'):\n"
        "    print('locked', flush=True); time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(HpctlError) as e:
            with locked(path, timeout=0.5):
                pass
        assert f"pid {holder.pid}" in str(e.value) and "holder-cmd" in str(e.value)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_stale_lock_of_dead_pid_is_broken_with_a_warning(tmp_path, capsys):
    path = tmp_path / "state.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "state.json.lock").write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "command": "old", "time": "t"}))
    with locked(path, timeout=1) as st:
        st.save()
    assert "stale state lock" in capsys.readouterr().err
    assert State.load(path).serial == 1


def test_corrupt_state_is_a_clear_error(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(HpctlError, match="state file is unreadable"):
        State.load(path)


def test_unknown_job_has_did_you_mean(tmp_path):
    st = State(tmp_path / "s.json", jobs={"tiny-llama": _record("tiny-llama")})
    with pytest.raises(HpctlError, match="did you mean 'tiny-llama'"):
        st.job("tiny-lama")
