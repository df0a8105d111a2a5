"""Installing the baselines (torchx, the Trainer's accelerate) into the running environment.

They are what a user would otherwise pick, not dependencies of hpctl, so the bench installs them
itself from bench/requirements.txt. Always with --no-deps: a resolver run could pull another torch
build (a CUDA wheel) into the environment; the check afterwards makes sure it did not.
"""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def requirements() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def missing() -> list[str]:
    """Requirements not satisfied by the running environment."""
    out = []
    for req in requirements():
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            out.append(str(req))
            continue
        if installed not in req.specifier:
            out.append(str(req))
    return out


def ensure_baselines() -> list[str]:
    """Install what is missing; return what was installed (empty when all were present)."""
    todo = missing()
    if not todo:
        return []
    torch_before = metadata.version("torch")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *todo],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"pip could not install the baselines {todo}:\n{proc.stdout}{proc.stderr}")
    torch_after = metadata.version("torch")
    if torch_after != torch_before:
        raise RuntimeError(f"installing the baselines changed torch from {torch_before} to {torch_after}")
    return todo
