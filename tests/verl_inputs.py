"""HyperPod's verl recipes and the arguments their launcher scripts pass, read from the scripts.

Each of the 151 verl launcher scripts under ../shared/peer-launchers/hyperpod-v2/launcher_scripts
ends in one `python3 main.py ... "$@"` command. `script_args` reads that command's arguments from
the file and expands the variables the script reads from its environment with stand-in values
(the data, model and experiment paths a user exports), as bash would.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.helpers.workspace import SHARED

V2 = (SHARED / "peer-recipes" / "hyperpod").resolve()
LAUNCHER = (SHARED / "peer-launchers" / "hyperpod-v2").resolve()
SCRIPTS = LAUNCHER / "launcher_scripts"
IMAGE = "example.com/verl:0.7"
# What a user exports before running a script (the scripts read these from the environment).
ENVIRONMENT = {
    "SAGEMAKER_TRAINING_LAUNCHER_DIR": "/opt/launcher", "TRAIN_DATA": "/fsx/data/train.parquet",
    "VAL_DATA": "/fsx/data/val.parquet", "ACTOR_MODEL_PATH": "/fsx/models/actor",
    "CRITIC_MODEL_PATH": "/fsx/models/critic", "REWARD_MODEL_PATH": "/fsx/models/reward",
    "MODEL_PATH": "/fsx/models/base", "EXP_DIR": "/fsx/experiments", "CONTAINER_MOUNT": "/fsx",
    "CONTAINER": IMAGE, "NAMESPACE": "default",
}
SM_JOBS = ["+cluster.role_arn=arn:aws:iam::123456789012:role/hpctl", "cluster.sm_jobs_config.output_path=s3://bucket/out"]


def verl_scripts() -> list[Path]:
    return sorted(p for p in SCRIPTS.rglob("*.sh") if "recipes=fine-tuning/" in p.read_text()
                  and _recipe_of(p.read_text()).startswith(("fine-tuning/",)) and _is_verl(p))


def _recipe_of(text: str) -> str:
    match = re.search(r"recipes=(\S+)", text)
    return match.group(1) if match else ""


def _is_verl(script: Path) -> bool:
    recipe = V2 / "recipes" / f"{_recipe_of(script.read_text())}.yaml"
    return recipe.is_file() and "model_type: verl" in recipe.read_text()


def script_args(script: Path) -> list[str]:
    """The arguments the script gives main.py, with its variables expanded (bash's `${VAR}`)."""
    text = script.read_text()
    variables = dict(ENVIRONMENT)
    for name, value in re.findall(r'^([A-Z_]+)="([^"$]*)"$', text, re.M):  # RUN_NAME="..." literals
        variables[name] = value
    command = text.split("main.py", 1)[1].split('"$@"', 1)[0].replace("\\\n", " ")
    expanded = re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), ""), command)
    return shlex.split(expanded)


def as_hpctl(args: list[str], cluster: str) -> list[str]:
    """The script's arguments in the forms hpctl accepts today: `run.name=` (HyperPod's launcher
    reads it as the recipe's run.name) is written `recipes.run.name=`; for sm_jobs the cluster
    arguments name HyperPod's sm_jobs cluster file and add the role and output path it needs."""
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "run.name":
            out.append(f"recipes.run.name={value}")
        elif cluster != "k8s" and key in ("cluster", "cluster_type"):
            out.append(f"{key}={cluster}")
        elif cluster != "k8s" and key == "cluster.namespace":
            continue
        elif key == "base_results_dir":
            out.append("base_results_dir=/fsx/results")
        else:
            out.append(arg)
    return out + (SM_JOBS if cluster == "sm_jobs" else [])
