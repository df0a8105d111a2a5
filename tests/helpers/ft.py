"""What a fault-tolerant run (trainer.fault_tolerance) must show after one group was SIGKILLed:
shared by the local and Slurm acceptance tests. Reads the trainer's per-rank commit logs
(<results>/ft/group_G.rank_R.jsonl, with HPCTL_FT_PARAM_DIGEST=1)."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

GROUP_ENV = b"HPCTL_REPLICA_GROUP="


def commit_log(results: Path, group: int, rank: int = 0) -> list[dict]:
    """The complete lines of a commit log (read while the trainer appends: a last line without its
    newline is still being written and is left for the next read)."""
    path = results / "ft" / f"group_{group}.rank_{rank}.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]


def commits(results: Path, group: int, rank: int = 0) -> list[dict]:
    return [r for r in commit_log(results, group, rank) if "event" not in r]


def wait_for_step(results: Path, group: int, step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = commits(results, group)
        if done and done[-1]["step"] >= step:
            return
        time.sleep(0.2)
    raise AssertionError(f"group {group} never committed step {step}: {commits(results, group)[-3:]}")


def trainer_pids(group: int) -> list[int]:
    """This machine's trainer processes (not torchrun) of replica group `group`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"adapter.train" in cmdline and b"torch.distributed.run" not in cmdline \
                and GROUP_ENV + str(group).encode() in environ:
            found.append(int(entry.name))
    return found


def sigkill_group(group: int) -> list[int]:
    pids = trainer_pids(group)
    assert pids, f"no trainer process of replica group {group} found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def assert_recovered(results: Path, groups: int, ranks: int, max_steps: int, killed: int) -> dict:
    """The acceptance: the survivors were never restarted and committed every step once; the
    killed (or late) group joined and from its rejoin on every rank's parameters equal the survivors'
    after every commit. Returns figures for the caller (the rejoin step, the steps degraded)."""
    survivors = [g for g in range(groups) if g != killed]
    for g in survivors:
        for r in range(ranks):
            done = commits(results, g, r)
            assert [c["step"] for c in done] == list(range(1, max_steps + 1)), f"group {g} rank {r}"
            assert len({c["pid"] for c in done}) == 1, f"group {g} rank {r} was restarted"
            assert not [e for e in commit_log(results, g, r) if "event" in e], f"group {g} healed"
    log = commit_log(results, killed)
    recoveries = [i for i, e in enumerate(log) if e.get("event") == "recovery"]
    assert recoveries, "the killed group never healed from a peer"
    before, after = log[:recoveries[-1]], [c for c in log[recoveries[-1]:] if "event" not in c]
    before = [c for c in before if "event" not in c]
    steps_before, steps_after = [c["step"] for c in before], [c["step"] for c in after]
    assert steps_after == list(range(steps_after[0], max_steps + 1)), "the rejoined group skipped a step"
    assert len({c["pid"] for c in after}) == 1
    if before:  # killed mid-run (a group that joined late has no commits before its heal)
        assert steps_before == list(range(steps_before[0], steps_before[0] + len(steps_before)))
        assert steps_after[0] > steps_before[-1], "the killed group committed a step twice"
        assert after[0]["pid"] != before[-1]["pid"]
    for r in range(ranks):
        reference = {c["step"]: c["params"] for c in commits(results, survivors[0], r)}
        rejoined = [c for c in commits(results, killed, r) if c["step"] >= steps_after[0]]
        assert rejoined and all(c["params"] == reference[c["step"]] for c in rejoined), f"rank {r} differs"
    # no group-batch trained twice; the survivors' commits account for every one up to the last
    batches = [c["batch"] for g in range(groups) for c in commits(results, g)]
    assert len(batches) == len(set(batches))
    assert max(batches) + 1 == sum(c["live"] for c in commits(results, survivors[0]))
    degraded = [c["step"] for c in commits(results, survivors[0]) if c["live"] < groups]
    return {"rejoined_at": steps_after[0], "degraded_steps": degraded}
