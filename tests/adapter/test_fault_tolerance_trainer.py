"""The trainer under torchft (adapter/fault_tolerance.py) without hpctl: the lighthouse and one
torchrun per replica group started here, FSDP2 over 2 processes inside each group."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adapter import data
from adapter.fault_tolerance import CommitLog, GroupBatches
from tests.helpers import ft as ft_checks
from tests.helpers.trainer import REPO, env, tiny_recipe, write_spec


def test_group_batches_cover_the_plain_steps_samples() -> None:
    """With every group live, step s of 2 groups x 2 ranks reads the same samples as step s of
    4 ranks without fault tolerance (micro 2, accumulation 2)."""
    dataset = data.PackedDataset(torch.arange(1000), 1)  # sample i is the one token i, shuffled per epoch
    for step in range(3):
        want = set()
        for rank in range(4):
            sampler = data.StreamSampler(len(dataset), 2, 2, rank, 4, 1, shuffle=True)
            sampler.seek(step)
            for _ in range(2):
                want |= {tuple(dataset[i]["input_ids"].tolist()) for i in next(sampler)}
        got = set()
        for group in range(2):
            for rank in range(2):
                for batch in GroupBatches(dataset, 2, 2, rank, 2, 1).batches(step * 2 + group):
                    got |= {tuple(row.tolist()) for row in batch["input_ids"]}
        assert len(want) == 16
        assert got == want


def test_commit_log_is_rank_zeros_unless_every_rank_records_digests(tmp_path: Path) -> None:
    for rank, every_rank in ((0, False), (1, False), (1, True)):
        log = CommitLog(tmp_path, 1, rank, every_rank)
        log.write({"step": 1})
        log.close()
    assert sorted(p.name for p in (tmp_path / "ft").iterdir()) == ["group_1.rank_0.jsonl", "group_1.rank_1.jsonl"]
    assert ft_checks.commits(tmp_path, 1, 1) == [{"step": 1}]  # written once: by the digest run only


@pytest.mark.slow
def test_a_killed_group_heals_its_fsdp_shards_from_the_live_one(tmp_path: Path) -> None:
    """2 groups x 2 processes (FSDP2 inside each), min_replicas 2: group 1's trainers are
    SIGKILLed after step 10, so group 0 commits nothing until group 1 is back; the restarted group
    resumes from the newest checkpoint, takes every rank's model and optimizer shards from group 0,
    and from then on both groups hold bitwise the same parameters after each commit."""
    steps, port = 40, 24801
    results = tmp_path / "results"
    recipe = tiny_recipe(results, trainer={"devices": 4, "max_steps": steps, "limit_val_batches": 0,
                                           "fault_tolerance": {"enabled": True, "replica_groups": 2, "min_replicas": 2,
                                                               "lighthouse_port": port}},
                         model={"global_batch_size": None},
                         exp_manager={"checkpoint_callback_params": {"every_n_train_steps": 4}})
    spec = write_spec(recipe, tmp_path / "spec.json")
    # The lighthouse drops the killed group 2 s after its last heartbeat, well before it is back
    # (torchrun, imports, model build, checkpoint load), so group 0 gets a one-group quorum and
    # refuses to commit in it (min_replicas 2): the "not committed" asserted below.
    lighthouse = subprocess.Popen([sys.executable, "-m", "adapter.lighthouse", f"--port={port}",
                                   "--heartbeat-timeout-ms=2000"], cwd=REPO,
                                  env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def group(g: int, attempt: int, **extra: str) -> subprocess.Popen:
        log = (tmp_path / f"group{g}.{attempt}.log").open("w")
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                                 "-m", "adapter.train", "--config", str(spec)], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, env=env(HPCTL_REPLICA_GROUP=str(g),
                                                                  TORCHFT_LIGHTHOUSE=f"http://127.0.0.1:{port}",
                                                                  HPCTL_FT_PARAM_DIGEST="1", **extra))
    try:
        # group 1's ranks SIGKILL themselves right after committing step 10 (adapter.faults): between
        # the checkpoints of steps 8 and 12, so the restarted group must heal from group 0, not from disk
        survivor, killed = group(0, 0), group(1, 0, HPCTL_CRASH_AT="step@10")
        assert killed.wait(timeout=240) != 0
        again = group(1, 1)
        codes = (survivor.wait(timeout=600), again.wait(timeout=600))
    finally:
        lighthouse.terminate()
        lighthouse.wait(timeout=30)
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("group*.log")))
    assert codes == (0, 0), logs[-3000:]
    got = ft_checks.assert_recovered(results, groups=2, ranks=2, max_steps=steps, killed=1)
    assert got["degraded_steps"] == []  # min_replicas 2: nothing commits with one group
    assert "not committed" in logs and re.search(r"replica group 1 of 2 \(2 processes\) starting at step [1-9]\d* "
                                                 r"\(checkpoint", logs)
    assert "=== recovery: replica group 1 rejoined at step" in logs
