"""Section: replica-group fault tolerance (trainer.fault_tolerance, torchft) against the current
path, checkpoint-restart, each pair on one workload and 2 CPU processes, launched exactly as `hpctl
apply` on the local cluster would (hpctl composes the spec and renders the launch script; the
bench runs that script).

- tokens/s on the bench model (bench/tinyllama.py shapes, global batch 16, synthetic tokens):
  fault tolerance on (2 replica groups x 1 process, gradients averaged through torchft, a quorum
  per step) against off (FSDP2 over the same 2 processes), median of each run's metrics.jsonl
  after warm-up. Goal: at least 0.95x.
- a kill (on the tiny recipe's own model, whose steps are short enough that the killed group
  comes back well before the run ends): SIGKILL of group 1's trainer after its step KILL_AT.
  Steps lost by the surviving group (committed steps it trained again; goal 0), and the seconds
  from the kill to the killed group committing again (its restart, imports, model build and the
  heal from its peer) from the trainer's commit logs.
- the same kill under checkpoint-restart: SIGKILL of one rank after step KILL_AT of a plain job
  checkpointing every CHECKPOINT_EVERY steps; the launch script is started again at once (what a
  requeue or a re-apply does, without the scheduler's queueing), and the bench reports the seconds
  from the kill until a step completes again, and the steps trained twice (kill step - resumed step).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import adapter_spec, runner
from bench.report import Row, Section, median

KEY, TITLE = "fault_tolerance", "Fault tolerance: 2 replica groups (torchft) vs checkpoint-restart, 2 CPU proc"
KILL_AT = 15
CHECKPOINT_EVERY = 10
WARMUP = 5
FT = "trainer.fault_tolerance"


def _spec(name: str, root: Path, steps: int, extra: list[str], bench_model: bool = True) -> Any:
    from hpctl.compose import compose
    model = adapter_spec.benchmark_model() if bench_model else []
    return compose([adapter_spec.BASE_RECIPE, f"base_results_dir={root}", f"run.name={name}", "trainer.devices=2",
                    "trainer.num_nodes=1", f"trainer.max_steps={steps}", "trainer.log_every_n_steps=1",
                    "trainer.limit_val_batches=0", "exp_manager.export_full_model.save_last=false",
                    f"exp_manager.checkpoint_callback_params.every_n_train_steps={CHECKPOINT_EVERY}",
                    "exp_manager.checkpoint_callback_params.save_last=false", *model, *extra],
                   "local")


def _ft(port: int) -> list[str]:
    return [f"+{FT}.enabled=true", f"+{FT}.replica_groups=2", f"+{FT}.lighthouse_port={port}"]


def _launch(spec: Any) -> tuple[subprocess.Popen, Path]:
    """Write what the local backend writes and start its launch script; (process, results dir)."""
    from hpctl.backends.local import LocalBackend
    artifact = LocalBackend().render(spec)
    for path, text in artifact.files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    results = Path(artifact.results_dir)
    (results / "logs").mkdir(parents=True, exist_ok=True)
    log = (results / "logs" / "stdout.log").open("ab")
    proc = subprocess.Popen(["bash", str(results / "hpctl" / "launch.sh")], cwd=results, stdout=log,
                            stderr=subprocess.STDOUT, env=runner.env(), start_new_session=True)
    return proc, results


def _finish(proc: subprocess.Popen, results: Path, timeout: float = 900) -> None:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise runner.RunFailed(f"{results.name} did not finish in {timeout} s")
    if code != 0:
        tail = (results / "logs" / "stdout.log").read_text()[-3000:]
        raise runner.RunFailed(f"{results.name} exited {code}:\n{tail}")


def _metrics(results: Path) -> list[dict[str, Any]]:
    path = results / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _tokens_per_s(results: Path) -> float:
    rows = [m for m in _metrics(results) if m["step"] > WARMUP]
    return median([m["tokens_per_s"] for m in rows])


def _commits(results: Path, group: int) -> list[dict[str, Any]]:
    path = results / "ft" / f"group_{group}.rank_0.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _trainers(marker: str, group: int | None = None) -> list[int]:
    """PIDs of adapter.train processes (not torchrun) whose command line names `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0") if group is not None else []
        except OSError:
            continue
        if b"adapter.train" in cmd and b"torch.distributed.run" not in cmd and any(marker.encode() in c for c in cmd) \
                and (group is None or f"HPCTL_REPLICA_GROUP={group}".encode() in environ):
            found.append(int(entry.name))
    return found


def _wait(condition, what: str, timeout: float = 600, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise runner.RunFailed(f"timed out waiting for {what}")


def _ft_kill(root: Path, steps: int) -> dict[str, Any]:
    proc, results = _launch(_spec("ft_kill", root, steps, _ft(24901), bench_model=False))
    _wait(lambda: any(c.get("step", 0) >= KILL_AT for c in _commits(results, 1)), "group 1's step")
    survivor_before = max(c["step"] for c in _commits(results, 0) if "step" in c)
    killed = _trainers(str(results), group=1)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    _finish(proc, results)
    survivor = [c["step"] for c in _commits(results, 0) if "step" in c]
    back = [c for c in _commits(results, 1) if "step" in c and c["pid"] not in killed]  # the restarted process
    log = (results / "logs" / "stdout.log").read_text()
    return {"steps_lost": len(survivor) - len(set(survivor)), "survivor_step_at_kill": survivor_before,
            "uncommitted_attempts": log.count("not committed"),
            "kill_to_commit_s": back[0]["time"] - killed_at if back else None,
            "rejoined_at_step": back[0]["step"] if back else None}


def _restart_kill(root: Path, steps: int) -> dict[str, Any]:
    spec = _spec("ckpt_restart", root, steps, [], bench_model=False)
    proc, results = _launch(spec)
    _wait(lambda: any(m["step"] >= KILL_AT for m in _metrics(results)), "the plain job's step")
    killed_at = time.monotonic()
    at_kill = max(m["step"] for m in _metrics(results))
    os.kill(_trainers(str(results))[0], signal.SIGKILL)
    proc.wait(timeout=300)  # torchrun takes the whole job down
    log = results / "logs" / "stdout.log"
    offset = log.stat().st_size
    proc, results = _launch(spec)  # the requeue / re-apply, at once

    def stepped() -> bool:  # a step line of the restarted run
        with log.open("rb") as f:
            f.seek(offset)
            return adapter_spec.STEP_LINE.search(f.read().decode(errors="replace")) is not None

    _wait(stepped, "the restarted job's first step", poll=0.02)
    back_s = time.monotonic() - killed_at
    _finish(proc, results)
    resumed = at_kill // CHECKPOINT_EVERY * CHECKPOINT_EVERY
    return {"step_at_kill": at_kill, "resumed_from": resumed, "steps_redone": at_kill - resumed,
            "kill_to_training_s": back_s}


def run(section: Section, quick: bool) -> None:
    steps, kill_steps = (20, 600) if quick else (60, 1000)  # the killed group needs about 10 s to come back
    with tempfile.TemporaryDirectory(prefix="hpctl-bench-ft-") as d:
        root = Path(d)
        proc, plain_dir = _launch(_spec("plain", root, steps, adapter_spec.no_checkpoints()))
        _finish(proc, plain_dir)
        proc, ft_dir = _launch(_spec("ft", root, steps, [*adapter_spec.no_checkpoints(), *_ft(24900)]))
        _finish(proc, ft_dir)
        plain, ft = _tokens_per_s(plain_dir), _tokens_per_s(ft_dir)
        kill = _ft_kill(root, kill_steps)
        restart = _restart_kill(root, kill_steps)
    section.details = {"steps": steps, "kill_run_steps": kill_steps, "kill_at": KILL_AT,
                       "checkpoint_every": CHECKPOINT_EVERY,
                       "tokens_per_s": {"ft": ft, "plain": plain}, "ft_kill": kill, "checkpoint_restart": restart}
    section.rows = [
        Row("tokens/s, fault tolerance on (2 groups x 1) vs off (FSDP2 x 2)", ft, "tok/s", plain, ">= 0.95x",
            ft / plain >= 0.95),
        Row("steps the surviving group trained again after a SIGKILL (vs checkpoint-restart's redone)",
            kill["steps_lost"], "steps", restart["steps_redone"], "0", kill["steps_lost"] == 0,
            note=f"in-flight step attempts redone: {kill['uncommitted_attempts']}"),
        Row("seconds from the kill to the killed group committing again (vs the restarted job's first step)",
            kill["kill_to_commit_s"], "s", restart["kill_to_training_s"], "",
            note="the surviving group never stops; checkpoint-restart stops every rank"),
    ]
