"""`hpctl init DIR` and the drop-in main.py: HyperPod's launcher scripts run hpctl unchanged."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpctl import dropin
from hpctl.errors import HpctlError
from helpers.launcher_scripts import LAUNCHERS, copy_checkout

V1_SCRIPT = "launcher_scripts/llama/run_hf_llama3_8b_seq8k_gpu_p5x16_pretrain.sh"
STAND_INS = {"TRAIN_DIR": "/fsx/train", "VAL_DIR": "/fsx/val", "EXP_DIR": "/fsx/exp"}


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = copy_checkout("v1", tmp_path / "hyperpod")
    dropin.init(root)
    return root


def _bare_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    """The user's shell: first on PATH a `python3` that cannot import hpctl (isolated, no site
    packages), nothing of hpctl's in the environment."""
    python3 = bin_dir / "python3"
    if not python3.exists():
        bin_dir.mkdir(exist_ok=True)
        python3.write_text(f'#!/bin/sh\nexec {shutil.which("python3", path="/usr/bin:/bin")} -I -S "$@"\n')
        python3.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCTL_") and k != "PYTHONPATH"}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    return {**env, **STAND_INS, **extra}


def _script(checkout: Path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(checkout / script), *args], cwd=checkout, stdin=subprocess.DEVNULL,
                          env=_bare_env(checkout.parent / "bin", SAGEMAKER_TRAINING_LAUNCHER_DIR=str(checkout), **env),
                          capture_output=True, text=True, timeout=120)


def test_init_keeps_hyperpods_main_and_restore_puts_it_back(tmp_path: Path) -> None:
    root = copy_checkout("v1", tmp_path / "hyperpod")
    original = (root / "main.py").read_bytes()
    dropin.init(root)
    assert (root / dropin.ORIGINAL).read_bytes() == original
    assert dropin.is_dropin(root / "main.py") and os.access(root / "main.py", os.X_OK)
    assert f"PYTHON = {sys.executable!r}" in (root / "main.py").read_text()
    dropin.init(root)  # again (say, for another hpctl): the original stays kept
    assert (root / dropin.ORIGINAL).read_bytes() == original
    dropin.restore(root)
    assert (root / "main.py").read_bytes() == original and not (root / dropin.ORIGINAL).exists()
    with pytest.raises(HpctlError, match="no main.py.hyperpod to restore"):
        dropin.restore(root)


def test_init_refuses_a_directory_that_is_not_a_hyperpod_checkout(tmp_path: Path) -> None:
    with pytest.raises(HpctlError, match="not a HyperPod recipes checkout"):
        dropin.init(tmp_path)


@pytest.mark.slow
def test_the_cli_init_command(tmp_path: Path) -> None:
    root = copy_checkout("v2", tmp_path / "hyperpod")
    p = subprocess.run([sys.executable, "-m", "hpctl", "init", str(root)], capture_output=True, text=True)
    assert p.returncode == 0 and "main.py.hyperpod" in p.stdout
    p = subprocess.run([sys.executable, "-m", "hpctl", "init", "--restore", str(root)], capture_output=True, text=True)
    assert p.returncode == 0 and (root / "main.py").read_bytes() == (LAUNCHERS["v2"] / "main.py").read_bytes()


@pytest.mark.slow
def test_plan_only_runs_the_inited_hpctl_from_a_python3_without_it(checkout: Path) -> None:
    env = _bare_env(checkout.parent / "bin")
    assert subprocess.run(["python3", "-c", "import hpctl"], env=env, cwd=checkout, capture_output=True).returncode != 0
    p = _script(checkout, V1_SCRIPT, HPCTL_PLAN_ONLY="1")
    assert p.returncode == 2, p.stderr  # plan --detailed-exitcode: changes
    assert "recipe         training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain" in p.stdout
    assert f"{checkout}/results/hf-llama3-8b" in p.stdout  # the script's base_results_dir, in the sbatch
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in p.stdout
    assert not (checkout / ".hpctl" / "state.json").exists()  # a plan records nothing


@pytest.mark.slow
def test_without_a_terminal_or_a_variable_it_refuses_and_names_them(checkout: Path) -> None:
    p = _script(checkout, V1_SCRIPT)
    assert p.returncode == 1
    assert "stdin is not a terminal" in p.stderr
    assert "HPCTL_AUTO_APPROVE=1" in p.stderr and "HPCTL_PLAN_ONLY=1" in p.stderr
    p = _script(checkout, V1_SCRIPT, HPCTL_PLAN_ONLY="maybe")
    assert p.returncode == 1 and "HPCTL_PLAN_ONLY='maybe' is not a yes or no" in p.stderr


@pytest.mark.slow
def test_auto_approve_applies_and_extra_arguments_pass_through(checkout: Path) -> None:
    """A user's own launcher script in HyperPod's form, ending in "$@" as v2's verl scripts do: the
    extra arguments reach hpctl; with HPCTL_AUTO_APPROVE=1 it applies without asking (here: the
    submission file only, HyperPod's slurm_create_submission_file_only)."""
    mine = checkout / "my_run.sh"
    mine.write_text((checkout / V1_SCRIPT).read_text().rstrip().rstrip("\\").rstrip() + ' \\\n    "$@"\n')
    p = _script(checkout, "my_run.sh", "cluster.slurm_create_submission_file_only=True", "recipes.trainer.max_steps=7",
                HPCTL_AUTO_APPROVE="1")
    assert p.returncode == 0, p.stderr
    assert "steps          7 " in p.stdout  # the extra argument reached hpctl
    sbatch = checkout / "results" / "hf-llama3-8b" / "hpctl" / "hf-llama3-8b.sbatch"
    assert "Apply complete: wrote " + str(sbatch) in p.stdout and sbatch.is_file()


def test_hyperpods_custom_script_mode_is_refused_with_hpctls_way(checkout: Path) -> None:
    with pytest.raises(HpctlError) as e:
        dropin.command(checkout, ["--config-path=/x/custom_script", "--config-name=config_slurm", "base_results_dir=/r"],
                       tty=False)
    [p] = e.value.problems
    assert p.key == "--config-path" and "custom-script mode" in p.message and "git.entry_script" in p.hint
