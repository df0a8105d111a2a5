"""`hpctl init DIR`: HyperPod's launcher scripts, unchanged, run hpctl.

A HyperPod recipes checkout has `main.py` (its Hydra launcher), `launcher_scripts/` (one shell script
per recipe: `python3 ${SAGEMAKER_TRAINING_LAUNCHER_DIR}/main.py recipes=... key=value ... "$@"`) and
`recipes_collection/` (config.yaml, cluster/, recipes/), in its v1 and v2 layouts alike. `init` moves
HyperPod's `main.py` aside to `main.py.hyperpod` and writes a small `main.py` in its place that runs
this module with the script's arguments, so `SAGEMAKER_TRAINING_LAUNCHER_DIR=DIR bash run_x.sh` plans
and applies with hpctl, against DIR/recipes_collection as the workspace and DIR/.hpctl as the state.
`init --restore DIR` puts HyperPod's file back.

The drop-in runs the interpreter and the hpctl that `init` ran with (recorded in the file), whichever
`python3` the script finds first on PATH, since that one may not have hpctl at all.

What it does follows Terraform's rule for a non-interactive apply: it shows the plan, then applies,
asking first when stdin is a terminal; HPCTL_AUTO_APPROVE=1 applies without asking; HPCTL_PLAN_ONLY=1
only plans and exits as `plan --detailed-exitcode` does (0 no changes, 1 error, 2 changes). Without a
terminal and without either variable it refuses and names them, rather than block on a prompt no one
sees or apply what no one approved.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from hpctl.errors import HpctlError

MARKER = "# hpctl drop-in main.py"
ORIGINAL = "main.py.hyperpod"
COLLECTION = "recipes_collection"
STATE = ".hpctl/state.json"
PLAN_ONLY, AUTO_APPROVE = "HPCTL_PLAN_ONLY", "HPCTL_AUTO_APPROVE"
TRUE, FALSE = ("1", "true", "yes"), ("", "0", "false", "no")
CUSTOM_SCRIPT_FLAGS = ("--config-path", "--config-name", "-cp", "-cn")  # Hydra's; HyperPod's custom_script uses them

TEMPLATE = '''#!/usr/bin/env python3
{marker}, written by `hpctl init`: HyperPod's launcher scripts run hpctl with
# their arguments (HPCTL_PLAN_ONLY=1 only plans; HPCTL_AUTO_APPROVE=1 applies without asking).
# HyperPod's own main.py is kept beside this file as {original}; `hpctl init --restore DIR`
# (or moving it back over this file) undoes the step.
import os
import sys

PYTHON = {python!r}  # the interpreter and the hpctl that `hpctl init` ran with
HPCTL_PATH = {path!r}
path = os.pathsep.join(p for p in (HPCTL_PATH, os.environ.get("PYTHONPATH")) if p)
here = os.path.dirname(os.path.abspath(__file__))
os.execve(PYTHON, [PYTHON, "-m", "hpctl.dropin", here, *sys.argv[1:]], dict(os.environ, PYTHONPATH=path))
'''


def _checkout(directory: Path) -> Path:
    """DIR as a HyperPod checkout: its main.py (HyperPod's, or a drop-in) and its recipes."""
    if not (directory / COLLECTION / "config.yaml").is_file():
        raise HpctlError(f"{directory} is not a HyperPod recipes checkout: it has no {COLLECTION}/config.yaml",
                         key="DIR", expected="a directory with main.py, launcher_scripts/ and recipes_collection/")
    return directory / "main.py"


def is_dropin(main: Path) -> bool:
    try:
        return MARKER in main.read_text(errors="replace")[:400]
    except OSError:
        return False


def init(directory: Path) -> str:
    """Write the drop-in main.py into DIR, keeping HyperPod's as main.py.hyperpod; a second init
    rewrites the drop-in (say, for another hpctl) and keeps the original."""
    directory = directory.resolve()
    main = _checkout(directory)
    original = directory / ORIGINAL
    if main.is_file() and not is_dropin(main):
        if original.exists():
            raise HpctlError(f"{original} already exists and {main} is not hpctl's drop-in",
                             hint="move one of them away; init keeps HyperPod's main.py there")
        main.rename(original)
    elif not original.is_file():
        raise HpctlError(f"{directory} has no HyperPod main.py to keep", key="DIR",
                         hint="init works on a HyperPod checkout, whose main.py it keeps as main.py.hyperpod")
    import hpctl
    text = TEMPLATE.format(marker=MARKER, original=ORIGINAL, python=sys.executable,
                           path=str(Path(hpctl.__file__).resolve().parent.parent))
    tmp = main.with_name("main.py.hpctl-tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(main)
    return (f"{main} now runs hpctl ({sys.executable}); HyperPod's is kept as {original}.\n"
            f"Run a launcher script: SAGEMAKER_TRAINING_LAUNCHER_DIR={directory} bash "
            f"{directory}/launcher_scripts/.../run_x.sh (HPCTL_PLAN_ONLY=1 to only plan).")


def restore(directory: Path) -> str:
    """Undo init: HyperPod's main.py back in its place."""
    directory = directory.resolve()
    main, original = _checkout(directory), directory / ORIGINAL
    if not original.is_file():
        raise HpctlError(f"{directory} has no {ORIGINAL} to restore", key="DIR",
                         hint="init was not run here, or it was already undone")
    if main.exists() and not is_dropin(main):
        raise HpctlError(f"{main} is not hpctl's drop-in; not replacing it", hint=f"compare it with {original}")
    original.replace(main)
    return f"{main} is HyperPod's again."


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise HpctlError(f"{name}={os.environ[name]!r} is not a yes or no", key=name, expected="1 or 0")


def command(directory: Path, argv: list[str], tty: bool) -> list[str]:
    """The hpctl command line that a launcher script's main.py arguments amount to."""
    custom = next((a for a in argv if a.split("=", 1)[0] in CUSTOM_SCRIPT_FLAGS), None)
    if custom:
        raise HpctlError(f"HyperPod's custom-script mode ({custom.split('=', 1)[0]} with a training_cfg block) is not "
                         "supported by hpctl", key=custom.split("=", 1)[0],
                         hint="run your program from a recipe with git.entry_script (a Python file) or "
                              "git.entry_module, and trainer.num_nodes x trainer.devices for training_cfg.run's "
                              "nodes x ntasks_per_node")
    workspace, state = directory / COLLECTION, directory / STATE
    common = ["--workspace", str(workspace), "--state", str(state)]
    if _flag(PLAN_ONLY):
        return ["plan", "--detailed-exitcode", *common, *argv]
    if _flag(AUTO_APPROVE):
        return ["apply", "--auto-approve", *common, *argv]
    if tty:
        return ["apply", *common, *argv]
    raise HpctlError("stdin is not a terminal, so hpctl cannot ask whether to apply",
                     hint=f"set {AUTO_APPROVE}=1 to apply without asking, or {PLAN_ONLY}=1 to only plan")


def main() -> None:
    """`python -m hpctl.dropin DIR ARGS...`, as the drop-in main.py runs it."""
    from hpctl import cli
    directory, argv = Path(sys.argv[1]), sys.argv[2:]
    try:
        args = command(directory, argv, sys.stdin.isatty())
    except HpctlError as e:
        print(f"Error: {e.render()}", file=sys.stderr)
        sys.exit(1)
    cli.main(args)


if __name__ == "__main__":
    main()
