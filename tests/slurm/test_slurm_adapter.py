"""Issue 5's acceptance on a real Slurm: the built-in `tiny_llama` recipe on the built-in `slurm`
cluster, through the real CLI (`python -m hpctl` subprocesses), running the real trainer
(`adapter.train`) as a 2-node x 1-process CPU FSDP job on the two slurmd's of tests/slurm/cluster.sh.

The finite jobs (an uninterrupted reference, a job failing by fault injection, and one with
auto-resume whose random rank is SIGKILLed at a random step, one per crash seed) are applied
together at the start, in one workspace, so their start-up (mostly importing torch and
transformers) overlaps; each test then waits for its own job.

More crash seeds (each one more 2-node job): HPCTL_CRASH_SEEDS=9,10,11 pytest tests/slurm/test_slurm_adapter.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.trainer import crash_point, crash_seeds
from tests.helpers.slurm import TERMINAL, Workspace

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 8
CHECKPOINT_EVERY = 2
FAIL_AT = 3  # HPCTL_FAIL_AT_STEP: the run dies right after step 3, its newest checkpoint is step 2


def overrides(name: str, *extra: str, max_steps: int = MAX_STEPS) -> list[str]:
    """The recipe on the built-in slurm cluster, shrunk to this machine: 2 nodes x 1 CPU process,
    FSDP over both; the venv's python on the "nodes"; no whole-node or memory claims, so jobs share
    the one host. TORCH_CPP_LOG_LEVEL=INFO makes every rank print (c10d's connect lines), so rank
    1's log has something to show; it changes nothing in training."""
    return ["tiny_llama", "--cluster", "slurm", f"run.name={name}",
            "trainer.accelerator=cpu", "trainer.num_nodes=2", "trainer.devices=1", "model.shard_degree=2",
            f"cluster.python={sys.executable}", "cluster.exclusive=false", "cluster.mem=null",
            f"cluster.workdir={REPO}", f"trainer.max_steps={max_steps}",
            f"exp_manager.checkpoint_callback_params.every_n_train_steps={CHECKPOINT_EVERY}",
            "+cluster.env.TORCH_CPP_LOG_LEVEL=INFO", *extra]


FAULT = f"+cluster.env.HPCTL_FAIL_AT_STEP={FAIL_AT}"
CRASH_SEEDS = crash_seeds("9")  # seed 9: rank 1 (on n2) after step 4, before step 4's checkpoint


def crash(seed: int) -> str:
    rank, step = crash_point(seed, MAX_STEPS - 1)
    return f"+cluster.env.HPCTL_CRASH_AT=step@{step}@{rank}"


JOBS = {
    "ref": overrides("ref"),
    "fail": overrides("fail", FAULT),
    **{f"resume{seed}": overrides(f"resume{seed}", crash(seed), "cluster.auto_resume.enabled=true")
       for seed in CRASH_SEEDS},
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, slurm_cluster: None):
    """A workspace with the finite jobs applied; any job still running at the end is cancelled."""
    workspace = Workspace(tmp_path_factory.mktemp("slurm-adapter"))
    for name, args in JOBS.items():
        workspace.apply(name, args)
    yield workspace
    listed = json.loads(workspace.hpctl("status", "--json", check=False).stdout or "{}")
    for job in listed.get("jobs", []):
        if job["state"] not in TERMINAL:
            workspace.hpctl("cancel", job["name"], check=False)


def by_step(rows: list[dict[str, Any]]) -> list[tuple[int, float, float, float]]:
    return [(m["step"], m["loss"], m["grad_norm"], m["lr"]) for m in rows]


def safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table of a .safetensors file (8-byte little-endian length, then JSON), torch-free."""
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(size))


def test_two_node_cpu_job_trains_to_the_end(ws):
    job = ws.wait("ref")
    seen = ws.seen["ref"]
    assert (job["state"], job["exit_code"], job["backend_state"]) == ("SUCCEEDED", 0, "COMPLETED"), ws.log("ref")
    assert seen[0] in ("PENDING", "RUNNING") and "RUNNING" in seen, seen
    assert job["metrics"]["step"] == MAX_STEPS

    rows = ws.metrics("ref")
    assert [m["step"] for m in rows] == list(range(1, MAX_STEPS + 1))
    assert all(m["max_steps"] == MAX_STEPS and isinstance(m["loss"], float) for m in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns something

    text = ws.hpctl("logs", "ref").stdout
    assert "run 0 on n[1-2]" in text and "hpctl: exit code 0" in text
    assert "[rank0]: adapter: starting fresh at step 0; mesh dp_replicate=1 dp_shard=2" in text
    rank0 = ws.hpctl("logs", "ref", "--rank", "0").stdout
    assert f"adapter: finished at step {MAX_STEPS}" in rank0 and f"step {MAX_STEPS}/{MAX_STEPS}" in rank0
    rank1 = ws.hpctl("logs", "ref", "--rank", "1").stdout.splitlines()
    assert rank1 and any("[c10d]" in line for line in rank1), rank1  # rank 1 ran, on its own node
    # --rank strips torchrun's "[rankN]: " prefix (torch's own C++ warnings carry "[rank1]:W...")
    assert not any(line.startswith(("[rank0]", "[rank1]: ")) or "adapter: finished" in line for line in rank1)

    export = ws.results("ref") / "checkpoints" / "full" / f"step_{MAX_STEPS:08d}"
    config = json.loads((export / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("llama", 2, 64)
    tensors = safetensors_header(export / "model.safetensors")
    assert tensors["lm_head.weight"]["shape"] == [256, 64] and tensors["lm_head.weight"]["dtype"] == "F32"
    assert tensors["model.layers.1.mlp.down_proj.weight"]["shape"] == [64, 172]  # whole, not one shard


def test_fault_injection_without_auto_resume_fails(ws):
    job = ws.wait("fail")
    assert (job["state"], job["backend_state"]) == ("FAILED", "FAILED"), ws.log("fail")
    code = job["exit_code"]
    assert code not in (None, 0)
    assert (ws.results("fail") / "logs" / f"{job['job_id']}.exit").read_text().strip() == str(code)
    text = ws.log("fail")
    assert f"adapter: HPCTL_FAIL_AT_STEP={FAIL_AT} reached: exiting with code 3" in text
    assert "exitcode  : 3" in text and "requeueing" not in text
    assert [m["step"] for m in ws.metrics("fail")] == list(range(1, FAIL_AT + 1))
    # state keeps what status saw, and the table shows it
    assert json.loads(ws.hpctl("state", "show", "fail").stdout)["status"] == "FAILED"
    assert f"FAILED exit {code}" in ws.hpctl("status", "fail").stdout


@pytest.mark.parametrize("seed", CRASH_SEEDS)
def test_auto_resume_after_a_rank_is_killed_at_a_random_step_matches_the_uninterrupted_run(ws, seed):
    """SIGKILL (no cleanup, as the OOM killer would) of one rank after a random step: srun's
    --kill-on-bad-exit ends the other node's rank, the script requeues, the rerun (disarmed by
    SLURM_RESTART_COUNT) resumes from the last checkpoint before the kill, trains every dropped
    step again, and ends with the uninterrupted run's numbers and final weights, bit for bit
    (same seed, same config, resumed model/optimizer/data/RNG state)."""
    rank, step = crash_point(seed, MAX_STEPS - 1)
    name = f"resume{seed}"
    job = ws.wait(name, timeout_s=300)
    assert (job["state"], job["exit_code"], job["detail"]) == ("SUCCEEDED", 0, "restarts 1"), ws.log(name)
    text = ws.hpctl("logs", name).stdout  # one log file, appended to by both runs
    last = (step - 1) // CHECKPOINT_EVERY * CHECKPOINT_EVERY  # the kill comes before step's own checkpoint
    resumed_from = f"adapter: resumed from {ws.results(name) / 'checkpoints' / 'sharded' / f'step_{last:08d}'} " \
        f"at step {last}" if last else "adapter: starting fresh at step 0"
    for expected in (f"[rank{rank}]: adapter: HPCTL_CRASH_AT: SIGKILL at step of step {step}",
                     "hpctl: requeueing after exit code", "run 1 on n[1-2]", resumed_from,
                     f"adapter: finished at step {MAX_STEPS}", "hpctl: exit code 0"):
        assert expected in text, expected
    assert "SIGKILL" not in text.split("run 1 on n[1-2]")[1]  # the rerun is not crashed again

    ws.wait("ref")  # (when this test runs alone)
    resumed, reference = by_step(ws.metrics(name)), by_step(ws.metrics("ref"))
    assert [row[0] for row in resumed] == list(range(1, MAX_STEPS + 1))  # every step once
    assert resumed == reference
    final = Path("checkpoints") / "full" / f"step_{MAX_STEPS:08d}" / "model.safetensors"
    assert (ws.results(name) / final).read_bytes() == (ws.results("ref") / final).read_bytes()


def test_cancel_of_a_running_job(ws):
    ws.apply("cancel", overrides("cancel", max_steps=100000))
    ws.wait("cancel", lambda j: j["state"] == "RUNNING" and (j["metrics"] or {}).get("step", 0) >= 1)
    out = ws.hpctl("cancel", "cancel").stdout
    assert out.startswith("cancelled cancel (slurm job "), out
    job = ws.wait("cancel", timeout_s=60)
    assert (job["state"], job["backend_state"]) == ("CANCELLED", "CANCELLED"), ws.log("cancel")
    assert json.loads(ws.hpctl("state", "show", "cancel").stdout)["status"] == "CANCELLED"
    assert job["metrics"]["step"] < 100000 and "adapter: finished" not in ws.log("cancel")
