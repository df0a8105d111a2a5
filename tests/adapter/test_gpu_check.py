"""bench/gpu_check.py's dry run: its imports and code path on CPU (the real run needs a GPU)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.adapter.conftest import REPO, env

pytestmark = pytest.mark.slow


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--variants", "ac,qlora", "--out", str(out)],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result, qlora = json.loads(out.read_text())["results"]
    assert result["variant"] == "ac" and result["tokens_per_s"] > 0 and result["memory_gb"] > 0
    assert 6.0 < result["loss"] < 7.5  # about ln(1024) for random tokens
    # QLoRA adds rank-16 A and B to q_proj (256 -> 256) and v_proj (256 -> 64) of both layers
    assert qlora["variant"] == "qlora" and 6.0 < qlora["loss"] < 7.5
    assert qlora["params"] == result["params"] + 2 * (16 * (256 + 256) + 16 * (256 + 64))
