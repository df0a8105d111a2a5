"""Section 1: how long `hpctl plan` takes against TorchX's dry run, each as a cold process.

Both produce a Slurm submission for 16 nodes x 8 GPUs without submitting it:
  hpctl plan llama/llama3_1_8b_pretrain --cluster slurm --json
  torchx run --dryrun -s slurm dist.ddp -j 16x8 --script train.py
Each run is a fresh process started from its console script, in an empty scratch directory (no
state, no .torchxconfig). Runs are interleaved, alternating which goes first, after one untimed
run of each to warm the page cache (full run only). Wall time is what the user waits; CPU time (getrusage of
children) is what it costs, and is not fooled by a process that sleeps.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench import runner
from bench.report import Row, Section, median, spread

RECIPE = "llama/llama3_1_8b_pretrain"
WALL_GOAL_S = 0.3


def _commands() -> dict[str, list[str]]:
    return {
        "hpctl": [runner.console_script("hpctl"), "plan", RECIPE, "--cluster", "slurm", "--json"],
        "torchx": [runner.console_script("torchx"), "run", "--dryrun", "-s", "slurm", "dist.ddp",
                   "-j", "16x8", "--script", "train.py"],
    }


KEY, TITLE = "plan_latency", "1. Plan latency: cold process, Llama 3.1 8B on Slurm 16x8"
USES_BASELINES = True  # torchx: bench.baselines installs it


def _sinfo_seconds() -> float | None:
    """How long Slurm's `sinfo` takes here: torchx's dry run calls it (for the partition's memory),
    and it waits for its timeout when a Slurm config exists but no controller answers."""
    import shutil
    import subprocess
    import time
    if shutil.which("sinfo") is None:
        return None
    start = time.perf_counter()
    subprocess.run(["sinfo", "--format", "%P,%m", "--noconvert"], capture_output=True, timeout=120)
    return time.perf_counter() - start


def run(section: Section, quick: bool) -> None:
    n = 3 if quick else 10
    cmds = _commands()
    samples: dict[str, dict[str, list[float]]] = {k: {"wall_s": [], "cpu_s": []} for k in cmds}
    with tempfile.TemporaryDirectory(prefix="hpctl-bench-plan-") as tmp:
        cwd = Path(tmp)
        (cwd / "train.py").write_text("print('train')\n")
        plan = json.loads(runner.run(cmds["hpctl"], cwd=cwd).stdout)  # proof that the plan really planned
        if not quick:  # one untimed run of each warms the page cache
            runner.run(cmds["torchx"], cwd=cwd)
        for i in range(n):
            order = ["hpctl", "torchx"] if i % 2 == 0 else ["torchx", "hpctl"]
            for name in order:
                t = runner.run(cmds[name], cwd=cwd)
                samples[name]["wall_s"].append(t.wall_s)
                samples[name]["cpu_s"].append(t.cpu_s)
    sinfo = _sinfo_seconds()
    ours_wall, tx_wall = median(samples["hpctl"]["wall_s"]), median(samples["torchx"]["wall_s"])
    ours_cpu, tx_cpu = median(samples["hpctl"]["cpu_s"]), median(samples["torchx"]["cpu_s"])
    sinfo_note = "no sinfo here" if sinfo is None else f"torchx calls sinfo: {sinfo:.2f} s here"
    section.rows = [
        Row("wall time, median", ours_wall, "s", tx_wall, f"<= {WALL_GOAL_S} s", ours_wall <= WALL_GOAL_S,
            note=f"{n} runs each; {sinfo_note}"),
        Row("CPU time, median", ours_cpu, "s", tx_cpu, "<= 1.0x", ours_cpu <= tx_cpu),
    ]
    section.details = {
        "runs_each": n,
        "commands": {k: " ".join([Path(v[0]).name, *v[1:]]) for k, v in cmds.items()},
        "plan_format_version": plan.get("format_version"),
        "sinfo_s": sinfo,
        **{f"{name}_{metric}": spread(vals) for name, m in samples.items() for metric, vals in m.items()},
        "samples": samples,
    }
