"""Section: `hpctl status` of 1,000 jobs, and state read/write as the job count grows.

A workspace's state is filled with generated Slurm job records (`make_state`), and `squeue`,
`scontrol` and `sacct` are stand-ins on PATH (`stub_slurm`) that answer for all of them from
files and log each call: the row measures hpctl (one cold `hpctl status --json` process), not a
controller, and the call log shows that Slurm is asked once for all jobs, not once per job.
State load and save are timed in-process at 1,000 to 8,000 records; the ratio of the per-record
times at 8,000 and 1,000 shows whether they grow linearly (1.0) or worse.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from bench import runner
from bench.report import Row, Section, median

KEY, TITLE = "many_jobs", "Many jobs: hpctl status of 1,000 Slurm jobs, state read/write"
STATUS_GOAL_S = 2.0
FIRST_ID = 100000


def make_state(path: Path, n: int, results_root: Path) -> None:
    """A state file with n Slurm job records (ids FIRST_ID...), as `hpctl apply` writes them."""
    from hpctl.backends.base import JobRecord
    from hpctl.state import State
    state = State(path)
    for i in range(n):
        name, results = f"job-{i:05d}", f"{results_root}/job-{i:05d}"
        script = f"#!/bin/bash\n#SBATCH --job-name=hpctl-{name}\n#SBATCH --nodes=2\n" + "echo step\n" * 40
        state.jobs[name] = JobRecord(
            name=name, cluster="slurm", backend="slurm", job_id=str(FIRST_ID + i), spec_digest=f"sha256:{i:064x}",
            spec={"cluster_type": "slurm", "recipes": {"run": {"name": name, "results_dir": results},
                                                       "trainer": {"max_steps": 1000, "num_nodes": 2}}},
            artifact={"kind": "sbatch", "text": script, "files": {f"{results}/hpctl/{name}.sbatch": script}},
            results_dir=results, logs={"stdout": f"{results}/logs/%j.out"}, applied_at="2026-12-01T00:00:00Z",
            status="RUNNING")
    state.save()


def stub_slurm(bin_dir: Path, n: int, calls: Path) -> None:
    """squeue/scontrol/sacct stand-ins: squeue knows the first half of the jobs (running),
    sacct the rest (completed); each call appends its argv to `calls`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    half = n // 2
    jobs = [{"job_id": FIRST_ID + i, "job_state": ["RUNNING"], "exit_code": {"return_code": {"number": 0}},
             "restart_cnt": 0} for i in range(half)]
    (bin_dir / "squeue.json").write_text(json.dumps({"jobs": jobs}))
    (bin_dir / "sacct.txt").write_text("".join(f"{FIRST_ID + i}|COMPLETED|0:0|0\n" for i in range(half, n)))
    outputs = {"squeue": "squeue.json", "sacct": "sacct.txt", "scontrol": None}
    for name, out in outputs.items():
        body = f'cat "{bin_dir}/{out}"\n' if out else "exit 1\n"
        (bin_dir / name).write_text(f'#!/bin/bash\necho "{name} $*" >> "{calls}"\n{body}')
        (bin_dir / name).chmod(0o755)


def _state_io(n: int, tmp: Path) -> tuple[float, float]:
    from hpctl.state import State
    path = tmp / f"state-{n}.json"
    make_state(path, n, tmp / "results")
    loads, saves = [], []
    for _ in range(3):
        t = time.perf_counter()
        state = State.load(path)
        loads.append(time.perf_counter() - t)
        t = time.perf_counter()
        state.save()
        saves.append(time.perf_counter() - t)
    return median(loads), median(saves)


def run(section: Section, quick: bool) -> None:
    n, repeats = 1000, 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="hpctl-bench-jobs-") as d:
        tmp = Path(d)
        ws, calls = tmp / "ws", tmp / "calls.log"
        make_state(ws / ".hpctl" / "state.json", n, tmp / "results")
        stub_slurm(tmp / "bin", n, calls)
        env = {"PATH": f"{tmp / 'bin'}:{os.environ['PATH']}"}
        walls, cpus = [], []
        for _ in range(repeats):
            calls.unlink(missing_ok=True)
            timed = runner.run([runner.console_script("hpctl"), "status", "--json", "-w", str(ws)], cwd=tmp, extra_env=env)
            walls.append(timed.wall_s)
            cpus.append(timed.cpu_s)
        doc = json.loads(timed.stdout)
        states = sorted({j["state"] for j in doc["jobs"]})
        asked = calls.read_text().splitlines()
        t = time.perf_counter()
        runner.run([runner.console_script("hpctl"), "state", "list", "-w", str(ws)], cwd=tmp, extra_env=env)
        list_s = time.perf_counter() - t
        sizes = (1000, 2000, 4000, 8000)
        io = {size: _state_io(size, tmp) for size in sizes}
    per_record = {size: (load + save) / size for size, (load, save) in io.items()}
    growth = per_record[8000] / per_record[1000]
    wall = median(walls)
    section.rows = [
        Row("hpctl status, 1,000 Slurm jobs (cold process)", wall, "s", None, f"< {STATUS_GOAL_S} s",
            wall < STATUS_GOAL_S and len(doc["jobs"]) == n, note=f"{len(asked)} Slurm calls: "
            + ", ".join(a.split()[0] for a in asked) + f"; states {states}"),
        Row("hpctl status, 1,000 Slurm jobs: CPU time", median(cpus), "s", None, "",
            note="what the run cost, whatever else the machine was doing"),
        Row("hpctl state list, 1,000 jobs (cold process)", list_s, "s"),
        Row("state load+save per record, 8,000 vs 1,000 jobs", growth, "x", None, "<= 1.5x (linear)",
            growth <= 1.5, note=", ".join(f"{s}: {1e6 * v:.0f} us" for s, v in per_record.items())),
    ]
    section.details = {"jobs": n, "repeats": repeats, "status_wall_s": walls, "status_cpu_s": cpus, "slurm_calls": asked,
                       "state_io_s": {str(k): {"load": v[0], "save": v[1]} for k, v in io.items()}}
