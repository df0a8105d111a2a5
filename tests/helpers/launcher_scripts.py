"""Run HyperPod's launcher scripts, unchanged, against an `hpctl init`-ed copy of a HyperPod checkout.

The copy links everything from ../shared/peer-launchers/hyperpod-vN except main.py (copied, so init
can move it aside) and recipes_collection (linked to ../shared/peer-recipes). Each script runs as its
users run it: `SAGEMAKER_TRAINING_LAUNCHER_DIR=<copy> bash <script>`, with HPCTL_PLAN_ONLY=1 and the
environment variables the script documents (`NAME="${NAME}"` lines) set to stand-in values.
`python tests/helpers/launcher_scripts.py v2` prints each script's outcome.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LAUNCHERS = {"v1": SHARED / "peer-launchers" / "hyperpod-v1", "v2": SHARED / "peer-launchers" / "hyperpod-v2"}
RECIPES = {"v1": SHARED / "peer-recipes" / "hyperpod-v1", "v2": SHARED / "peer-recipes" / "hyperpod"}
DOCUMENTED = re.compile(r'^([A-Z][A-Z0-9_]*)="?\$\{\1\}"?', re.M)  # NAME="${NAME}": an input the user sets
RECIPE_ARG = re.compile(r"\brecipes=([^\s\\]+)")


def stand_in(name: str) -> str:
    """A value of the right kind for a documented variable."""
    if name == "CONTAINER":
        return "stand-in.example.com/hyperpod/training:1"
    if name == "CONTAINER_MOUNT":
        return "/fsx:/fsx"
    if name == "NAMESPACE":
        return "default"
    if name == "COMPILE":
        return "0"
    if name.endswith(("_NAME", "_TYPE")) and not name.endswith("MODEL_NAME"):
        return "stand-in"
    if name.endswith("TOKEN"):
        return "hf_stand_in_token"
    return "/fsx/stand-in/" + name.lower()


def copy_checkout(version: str, dest: Path) -> Path:
    """A HyperPod checkout hpctl init may change: links to the shared files, main.py copied."""
    dest.mkdir(parents=True)
    for entry in LAUNCHERS[version].iterdir():
        if entry.name in ("main.py", "recipes_collection"):
            continue
        (dest / entry.name).symlink_to(entry)
    shutil.copyfile(LAUNCHERS[version] / "main.py", dest / "main.py")
    (dest / "recipes_collection").symlink_to(RECIPES[version])
    return dest


def scripts(version: str) -> list[Path]:
    """Every launcher script that calls main.py (v1's custom_script/run_allreduce.sh does not)."""
    root = LAUNCHERS[version] / "launcher_scripts"
    return sorted(p for p in root.rglob("*.sh") if "main.py" in p.read_text())


def recipe_of(script: Path) -> str:
    return RECIPE_ARG.search(script.read_text()).group(1)


@dataclass
class Outcome:
    script: Path
    rc: int
    out: str
    err: str


def run(checkout: Path, script: Path, env: dict[str, str] | None = None, blank: str | None = None) -> Outcome:
    """One script with stand-ins for its documented variables (`blank`: one left empty)."""
    text = script.read_text()
    full = {k: v for k, v in os.environ.items() if k not in ("HPCTL_AUTO_APPROVE",)}
    full.update({name: stand_in(name) for name in DOCUMENTED.findall(text)})
    if blank:
        full[blank] = ""
    full.update(SAGEMAKER_TRAINING_LAUNCHER_DIR=str(checkout), HPCTL_PLAN_ONLY="1", **(env or {}))
    p = subprocess.run(["bash", str(script)], env=full, cwd=checkout, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300)
    return Outcome(script, p.returncode, p.stdout, p.stderr)


def run_all(checkout: Path, version: str, workers: int = 3) -> list[Outcome]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda s: run(checkout, s), scripts(version)))


if __name__ == "__main__":
    import tempfile
    version = sys.argv[1]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from hpctl import dropin
    with tempfile.TemporaryDirectory() as tmp:
        checkout = copy_checkout(version, Path(tmp) / "hp")
        dropin.init(checkout)
        for o in run_all(checkout, version):
            last = (o.err.strip().splitlines() or [""])[0][:200]
            print(o.rc, o.script.relative_to(LAUNCHERS[version]), last)
