"""Crashes at the worst moments (adapter/faults.py): a rank SIGKILLed at a random step, a SIGKILL
inside a checkpoint save, a save that runs out of space.

The save crash points run the real Checkpointer in a small process of its own (one gloo rank, a
few tensors: no model, so the three crash points cost one torch import each, run side by side);
the random-rank kill runs the real trainer under torchrun and compares its final weights with
the uninterrupted run's (the `fsdp2` fixture), bit for bit.

More seeds for the random kill (seed 5: rank 1 after step 5): HPCTL_CRASH_SEEDS=5,6,7 pytest tests/adapter/test_crash.py
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.trainer import (REPO, crash_point, crash_seeds, env, export_dir, losses, ok, sharded, tiny_recipe,
                                   torchrun)

pytestmark = pytest.mark.slow

SAVER = r"""
import resource, signal, sys
from pathlib import Path
import torch, torch.distributed as dist
from adapter.checkpoint import Checkpointer
from adapter.trainconfig import CheckpointConfig
root, keep, steps, fsize = Path(sys.argv[1]), int(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")], int(sys.argv[4])
dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{root}/.pg")
ckpt = Checkpointer(CheckpointConfig(root, True, 3, keep, True, False, None, 0, False), 0)
for step in steps:
    if fsize and step == steps[-1]:  # the last save runs out of space
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))
    try:
        ckpt.save(step, {"model": {"w": torch.full((1 << 16,), float(step))}, "train": {"step": step}})
    except RuntimeError as exc:
        print(f"save failed: {exc}", flush=True)
        sys.exit(1)
print("saved", steps, flush=True)
"""


def saver(root: Path, steps: str, keep: int = 1, fsize: int = 0, **extra: str) -> subprocess.Popen:
    root.mkdir(parents=True)
    return subprocess.Popen([sys.executable, "-c", SAVER, str(root), str(keep), steps, str(fsize)], cwd=REPO,
                            env=env(**extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def committed(root: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in (root / "sharded").glob("step_*") if (p / "COMMITTED").exists())


def test_sigkill_inside_a_save_never_loses_the_last_complete_checkpoint(tmp_path: Path) -> None:
    """keep=1, saves of steps 3 then 6; SIGKILL at each point of step 6's save. Step 6 is never
    resumed from, step 3 is (keep-N cleanup runs only after a commit), and the next save clears
    the debris. A save that hits the file-size limit fails with a clear message, step 3 intact."""
    from adapter.checkpoint import find_resume
    from adapter.trainconfig import CheckpointConfig

    points = ("shards", "metadata", "commit")
    procs = {p: saver(tmp_path / p, "3,6", HPCTL_CRASH_AT=f"{p}@6") for p in points}
    procs["full"] = saver(tmp_path / "full", "3,6", fsize=200_000)
    outputs = {name: (proc.communicate(timeout=300)[0], proc.returncode) for name, proc in procs.items()}

    for point in points:
        out, code = outputs[point]
        root = tmp_path / point
        assert code == -9 and f"SIGKILL at {point} of step 6" in out, out
        assert committed(root) == [3]
        assert (root / "sharded" / "step_00000006").is_dir()  # the interrupted save's debris
        assert (root / "sharded" / "step_00000006" / ".metadata").exists() == (point == "commit")
        cfg = CheckpointConfig(root, True, 3, 1, True, False, None, 0, False)
        assert find_resume(cfg) == root / "sharded" / "step_00000003"

    out, code = outputs["full"]
    assert code == 1 and "the checkpoint of step 6 could not be written" in out, out
    assert "GiB free there" in out and "the earlier checkpoints are intact" in out and "Traceback" not in out
    assert committed(tmp_path / "full") == [3]

    again = subprocess.run([sys.executable, "-c", SAVER, str(tmp_path / "commit"), "1", "9", "0"], cwd=REPO,
                           env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [p.name for p in (tmp_path / "commit" / "sharded").iterdir()] == ["step_00000009"]


@pytest.mark.parametrize("seed", crash_seeds("5"))
def test_random_rank_killed_at_a_random_step_resumes_bitwise(fsdp2: Path, tmp_path: Path, seed: int) -> None:
    """2 processes, 6 steps, checkpoints every 3: SIGKILL one rank after a random step; the rerun
    (what `hpctl apply` does again in the same results dir) ends with the weights of the
    uninterrupted run."""
    rank, step = crash_point(seed, 5)
    results = tmp_path / "results"
    recipe = tiny_recipe(results)
    first = torchrun(recipe, 2, HPCTL_CRASH_AT=f"step@{step}@{rank}")
    assert first.returncode != 0 and f"SIGKILL at step of step {step}" in first.stdout + first.stderr
    last = 3 if step > 3 else None  # a kill at step 3 comes before its checkpoint
    assert sorted(int(p.name[5:]) for p in sharded(results).glob("step_*") if (p / "COMMITTED").exists()) == \
        ([3] if last else [])

    second = ok(torchrun(recipe, 2))
    assert (f"resumed from {sharded(results) / 'step_00000003'}" if last else "starting fresh") in second.stdout
    assert losses(results) == losses(fsdp2)
    assert (export_dir(results, 6) / "model.safetensors").read_bytes() == \
        (export_dir(fsdp2, 6) / "model.safetensors").read_bytes()
