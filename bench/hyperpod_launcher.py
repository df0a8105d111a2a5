"""HyperPod's own launcher (main.py of sagemaker-hyperpod-recipes v1) as a plan-latency baseline.

It is what a HyperPod user runs today to turn a recipe into an sbatch script:
  main.py recipes=<recipe> cluster=slurm cluster_type=slurm base_results_dir=<dir>
          container=<image> recipes.run.name=<name> cluster.slurm_create_submission_file_only=True
Its code is in ../shared/peer-launchers/hyperpod-v1 (read-only test data beside the repository;
the row is skipped with the reason where that is absent). Its pinned requirements (hydra-core
1.3.2, omegaconf 2.2.x, boto3, ...) would clash with ours, so it runs from its own virtualenv,
VENV, made here from the package index when it is missing (SOURCE.txt there says the same).
Its recipes_collection is a symbolic link to ../../peer-recipes/hyperpod-v1 that the read-only copy
stores as a plain file, so the launcher runs from a scratch directory of links (`staged`).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.report import Skip
from bench.runner import REPO

SHARED = REPO.parent / "shared"
LAUNCHER = SHARED / "peer-launchers" / "hyperpod-v1"
RECIPES = SHARED / "peer-recipes" / "hyperpod-v1"
RECIPE = "training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain"
DATA = "model.data.train_dir=/fsx/data"  # the input HyperPod's README sets too; a job cannot start without it
VENV = Path(os.environ.get("HPCTL_BENCH_HYPERPOD_VENV", "/tmp/hpl"))
REQUIREMENTS = ["hydra-core==1.3.2", "omegaconf>=2.2,<2.3", "boto3", "pynvml", "requests", "tqdm", "zstandard"]


def python() -> Path:
    """The launcher's interpreter: VENV's, created and filled first when it lacks hydra."""
    if not (LAUNCHER / "main.py").is_file() or not RECIPES.is_dir():
        raise Skip(f"HyperPod's launcher is not at {LAUNCHER} (../shared is absent)")
    exe = VENV / "bin" / "python"
    if exe.exists() and subprocess.run([str(exe), "-c", "import hydra, omegaconf"], capture_output=True).returncode == 0:
        return exe
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [str(exe), "-m", "pip", "install", "--quiet", *REQUIREMENTS]]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise Skip(f"could not make HyperPod's virtualenv ({' '.join(cmd[:4])} ...): "
                       f"{(proc.stdout + proc.stderr).strip()[-300:]}")
    return exe


def staged(scratch: Path) -> Path:
    """A directory of links to the launcher's files, with recipes_collection linked to RECIPES."""
    scratch.mkdir(parents=True, exist_ok=True)
    for entry in LAUNCHER.iterdir():
        (scratch / entry.name).symlink_to(RECIPES if entry.name == "recipes_collection" else entry)
    return scratch


def command(launcher: Path, results_dir: Path) -> list[str]:
    """main.py (in a `staged` launcher) writing the sbatch script for RECIPE under results_dir,
    without submitting."""
    return [str(python()), str(launcher / "main.py"), f"recipes={RECIPE}", "cluster=slurm", "cluster_type=slurm",
            f"base_results_dir={results_dir}", "container=/fsx/images/adapter.sqsh", "recipes.run.name=llama-8b",
            f"recipes.{DATA}", "cluster.slurm_create_submission_file_only=True"]


def hpctl_command(hpctl: str) -> list[str]:
    """hpctl planning the same recipe from the same recipe collection."""
    return [hpctl, "plan", RECIPE, "--cluster", "slurm", "--workspace", str(RECIPES), DATA, "--json"]
