"""Plan latency of a verl recipe against an hf recipe (section 1's verl row): each a cold
`hpctl plan ... --cluster k8s --json` process on HyperPod's own recipe collections, interleaved.

verl's plan adds the key check against verl's config (schemas/verl), verl's start-up rules and the
RayJob; the goal is to stay within 1.5x of the hf recipe's plan (hpctl's own trainer: the trainer's
config rules, the memory estimate, the PyTorchJob).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from bench import hyperpod_launcher, runner
from bench.report import Row, median

V2 = hyperpod_launcher.SHARED / "peer-recipes" / "hyperpod"
VERL = "fine-tuning/llama/verl-grpo-rlaif-llama-3-dot-2-1b-instruct-lora"
RATIO_GOAL = 1.5


def commands(hpctl: str) -> dict[str, list[str]]:
    image = "container=example.com/img:1"
    return {
        "verl": [hpctl, "plan", VERL, "--cluster", "k8s", "--workspace", str(V2), image, "recipes.run.name=verl-x",
                 "++recipes.training_config.data.train_files=/fsx/data/train.parquet", "--json"],
        "hf": [hpctl, "plan", hyperpod_launcher.RECIPE, "--cluster", "k8s", "--workspace",
               str(hyperpod_launcher.RECIPES), hyperpod_launcher.DATA, image, "--json"],
    }


def rows(n: int, details: dict) -> list[Row]:
    if not (V2 / "config.yaml").is_file() or not (hyperpod_launcher.RECIPES / "config.yaml").is_file():
        details["verl"] = {"skipped": "HyperPod's recipe collections are absent (../shared)"}
        return [Row("verl recipe plan vs hf recipe plan", None, "s", note="skipped: ../shared is absent")]
    cmds = commands(runner.console_script("hpctl"))
    wall: dict[str, list[float]] = {k: [] for k in cmds}
    with tempfile.TemporaryDirectory(prefix="hpctl-bench-verl-") as tmp:
        for cmd in cmds.values():  # one untimed run each: page cache, and proof that both plan
            runner.run(cmd, cwd=Path(tmp))
        for i in range(n):
            for name in (["verl", "hf"] if i % 2 == 0 else ["hf", "verl"]):
                wall[name].append(runner.run(cmds[name], cwd=Path(tmp)).wall_s)
    ours, theirs = median(wall["verl"]), median(wall["hf"])
    details["verl"] = {"wall_s": wall, "commands": {k: " ".join(v[1:]) for k, v in cmds.items()}}
    return [Row("verl recipe plan (k8s RayJob) vs hf recipe plan (k8s PyTorchJob), wall median", ours, "s", theirs,
                f"<= {RATIO_GOAL}x", ours <= RATIO_GOAL * theirs,
                note=f"{n} runs each, interleaved; {VERL} vs {hyperpod_launcher.RECIPE}")]
