"""Checkpoints: exact resume, resharding, a longer max_steps, SIGTERM and SIGKILL."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.helpers.trainer import (export_dir, losses, ok, records, sharded, srun_style, tiny_recipe,
                                    torchrun)

pytestmark = pytest.mark.slow


def committed_steps(results: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in sharded(results).glob("step_*") if (p / "COMMITTED").exists())


def test_failure_then_resume_is_exact(fsdp2: Path, tmp_path: Path) -> None:
    """HPCTL_FAIL_AT_STEP=3 stops a fresh run right after step 3's (background) checkpoint; the
    rerun (same environment: a requeued job) resumes and ends bitwise equal to the straight run."""
    results = tmp_path / "results"
    recipe = tiny_recipe(results, exp_manager={"checkpoint_callback_params": {"async_save": True}})
    first = torchrun(recipe, 2, HPCTL_FAIL_AT_STEP="3")
    assert first.returncode != 0
    assert "HPCTL_FAIL_AT_STEP=3 reached: exiting with code 3" in first.stdout
    assert "exitcode  : 3" in first.stdout + first.stderr
    assert committed_steps(results) == [3]
    assert sorted(losses(results)) == [1, 2, 3]

    second = ok(torchrun(recipe, 2, HPCTL_FAIL_AT_STEP="3"))
    assert "resumed from" in second.stdout and "at step 3" in second.stdout
    assert losses(results) == losses(fsdp2)
    weights = export_dir(results, 6) / "model.safetensors"
    assert weights.read_bytes() == (export_dir(fsdp2, 6) / "model.safetensors").read_bytes()


def test_resume_from_two_processes_into_one(baseline: Path, fsdp2: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    recipe = tiny_recipe(results, exp_manager={"resume_from_checkpoint": str(sharded(fsdp2) / "step_00000003")})
    assert "dp_shard=1 tp=1, 2 micro-batch(es)" in ok(torchrun(recipe, 1)).stdout
    got, want = losses(results), losses(baseline)
    assert sorted(got) == [4, 5, 6]
    assert all(abs(got[s] - want[s]) < 1e-5 for s in got)


def test_larger_max_steps_continues_like_a_straight_run(baseline: Path, tmp_path: Path) -> None:
    """Apply again with a larger trainer.max_steps: the run continues from its last checkpoint and
    its losses and final weights equal those of the run that went straight to the end."""
    results = tmp_path / "results"
    ok(torchrun(tiny_recipe(results, trainer={"max_steps": 3}), 1))
    assert committed_steps(results) == [3]
    again = ok(torchrun(tiny_recipe(results), 1))
    assert "at step 3" in again.stdout
    assert losses(results) == losses(baseline)
    assert (export_dir(results, 6) / "model.safetensors").read_bytes() == \
        (export_dir(baseline, 6) / "model.safetensors").read_bytes()


def wait_for_commit(results: Path, proc, after: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newer = [s for s in committed_steps(results) if s > after]
        if newer:
            return newer[0]
        assert proc.poll() is None, proc.log.read_text()
        time.sleep(0.05)
    raise AssertionError("no new checkpoint in time")


def test_sigterm_saves_and_sigkill_resumes(tmp_path: Path) -> None:
    """srun-style single process: SIGTERM saves a checkpoint and exits 0; a SIGKILLed run leaves at
    most an uncommitted directory, and the next run resumes from the newest committed checkpoint
    with the losses the killed run had logged."""
    results = tmp_path / "results"
    recipe = tiny_recipe(results, trainer={"max_steps": 60, "limit_val_batches": 0},
                         exp_manager={"checkpoint_callback_params": {"every_n_train_steps": 5, "save_top_k": 2},
                                      "export_full_model": {"save_last": False}})

    proc = srun_style(recipe)
    wait_for_commit(results, proc, 0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, proc.log.read_text()
    out = proc.log.read_text()
    stopped = max(losses(results))
    assert f"preempted at step {stopped}: checkpoint saved" in out
    assert committed_steps(results)[-1] == stopped

    proc = srun_style(recipe)
    killed_after = wait_for_commit(results, proc, stopped + 5)
    proc.kill()
    proc.wait(timeout=60)
    logged = losses(results)
    assert max(logged) >= killed_after
    last = committed_steps(results)[-1]
    (sharded(results) / f"step_{last + 100:08d}").mkdir()  # as a save interrupted mid-write leaves it

    proc = srun_style(recipe)
    assert proc.wait(timeout=300) == 0, proc.log.read_text()
    out = proc.log.read_text()
    assert f"resumed from {sharded(results) / f'step_{last:08d}'} at step {last}" in out
    final = losses(results)
    assert sorted(final) == list(range(1, 61))
    assert all(final[s] == logged[s] for s in logged)
    assert [r["step"] for r in records(results)] == list(range(1, 61))
