"""HyperPod's `cluster.slurm_create_submission_file_only: True`: apply writes the batch script,
submits nothing (no sbatch is run), says so, and records no job."""
from __future__ import annotations

from pathlib import Path

import pytest


def test_apply_writes_the_script_and_submits_nothing(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.parent.mkdir()
    sbatch.write_text(f"#!/bin/sh\ntouch {tmp_path / 'sbatch-ran'}\necho 42\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{sbatch.parent}:/usr/bin:/bin")
    code, out, err = run_cli("apply", "tiny_llama", "-c", "slurm", "-w", tmp_path, "--auto-approve", "--no-color",
                             "cluster.slurm_create_submission_file_only=true")
    assert code == 0, err
    script = tmp_path / "results" / "tiny-llama" / "hpctl" / "tiny-llama.sbatch"
    assert script.read_text().startswith("#!/bin/bash")
    assert f"Apply complete: wrote {script}; nothing submitted" in out
    assert not (tmp_path / "sbatch-ran").exists()
    assert not (tmp_path / ".hpctl" / "state.json").exists()  # nothing submitted: no state, no lineage
    code, out, _ = run_cli("plan", "tiny_llama", "-c", "slurm", "-w", tmp_path, "--no-color",
                           "cluster.slurm_create_submission_file_only=true")
    assert code == 0 and "+ job tiny-llama: create" in out  # no job was recorded
