"""Section 1: how long `hpctl plan` takes against TorchX's dry run, each as a cold process.

Both produce a Slurm submission for 16 nodes x 8 GPUs without submitting it:
  hpctl plan llama/llama3_1_8b_pretrain --cluster slurm --json
  torchx run --dryrun -s slurm dist.ddp -j 16x8 --script train.py
And, on HyperPod's own recipe collection (../shared; skipped with the reason where absent),
`hpctl plan training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain --workspace ...` against HyperPod's
launcher writing its sbatch script for the same recipe (bench.hyperpod_launcher).
Each run is a fresh process started from its console script, in an empty scratch directory (no
state, no .torchxconfig). Runs are interleaved, alternating which goes first, after one untimed
run of each to warm the page cache (full run only). Wall time is what the user waits; CPU time (getrusage of
children) is what it costs, and is not fooled by a process that sleeps.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench import hyperpod_launcher, runner, verl_plan
from bench.report import Row, Section, Skip, median, spread

RECIPE = "llama/llama3_1_8b_pretrain"
WALL_GOAL_S = 0.3
HYPERPOD_WALL_GOAL_S, HYPERPOD_RATIO_GOAL = 0.20, 0.35


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
    section.rows += _hyperpod_rows(n, section.details)
    section.rows += verl_plan.rows(n, section.details)
    section.details.update({
        "runs_each": n,
        "commands": {k: " ".join([Path(v[0]).name, *v[1:]]) for k, v in cmds.items()},
        "plan_format_version": plan.get("format_version"),
        "sinfo_s": sinfo,
        **{f"{name}_{metric}": spread(vals) for name, m in samples.items() for metric, vals in m.items()},
        "samples": samples,
    })


def _hyperpod_rows(n: int, details: dict) -> list[Row]:
    """hpctl against HyperPod's main.py on the same recipe, interleaved like the torchx runs."""
    try:
        cmds = {"hpctl": hyperpod_launcher.hpctl_command(runner.console_script("hpctl"))}
        with tempfile.TemporaryDirectory(prefix="hpctl-bench-hyperpod-") as tmp:
            launcher = hyperpod_launcher.staged(Path(tmp) / "launcher")
            cmds["hyperpod"] = hyperpod_launcher.command(launcher, Path(tmp) / "results")
            cwd = {"hpctl": Path(tmp), "hyperpod": launcher}
            for name in cmds:  # one untimed run each: page cache, and proof that both work
                runner.run(cmds[name], cwd=cwd[name])
            wall: dict[str, list[float]] = {k: [] for k in cmds}
            cpu: dict[str, list[float]] = {k: [] for k in cmds}
            for i in range(n):
                for name in (["hpctl", "hyperpod"] if i % 2 == 0 else ["hyperpod", "hpctl"]):
                    t = runner.run(cmds[name], cwd=cwd[name])
                    wall[name].append(t.wall_s)
                    cpu[name].append(t.cpu_s)
    except Skip as exc:
        details["hyperpod"] = {"skipped": str(exc)}
        return [Row("HyperPod recipe: hpctl plan vs HyperPod main.py", None, "s", note=f"skipped: {exc}")]
    ours, theirs = median(wall["hpctl"]), median(wall["hyperpod"])
    details["hyperpod"] = {"recipe": hyperpod_launcher.RECIPE, "wall_s": wall, "cpu_s": cpu,
                           "commands": {k: " ".join(v[1:]) for k, v in cmds.items()}}
    return [Row("HyperPod recipe, wall median: hpctl plan vs HyperPod main.py", ours, "s", theirs,
                f"<= {HYPERPOD_WALL_GOAL_S} s and <= {HYPERPOD_RATIO_GOAL}x",
                ours <= HYPERPOD_WALL_GOAL_S and ours <= HYPERPOD_RATIO_GOAL * theirs,
                note=f"{n} runs each, interleaved; {hyperpod_launcher.RECIPE}"),
            Row("HyperPod recipe, CPU median: hpctl plan vs HyperPod main.py", median(cpu["hpctl"]), "s",
                median(cpu["hyperpod"]))]
