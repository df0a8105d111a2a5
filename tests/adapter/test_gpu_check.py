"""bench/gpu_check.py's dry run: its imports and code path on CPU (the real run needs a GPU)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.trainer import REPO, env

pytestmark = pytest.mark.slow


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    pytest.importorskip("torchao")
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--variants", "ac,fp8,ac+offload,qlora,cp",
                           "--out", str(out)], cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert list(results) == ["ac", "fp8", "ac+offload", "qlora", "cp"]
    # ring attention needs 2+ GPUs: the row says why it did not run, and the run still succeeds
    assert "needs 2 or more GPUs" in results.pop("cp")["skipped"]
    for result in results.values():
        assert result["tokens_per_s"] > 0 and result["memory_gb"] > 0
        assert 6.0 < result["loss"] < 7.5  # about ln(1024) for random tokens
    # the dry run's fp8 is real float8 (2 layers x 7 Linears); offloading says it has nothing to do on a CPU
    assert results["fp8"]["notes"][0].startswith("fp8: 14 Linear layers train in float8")
    assert "nothing to do on a CPU run" in results["ac+offload"]["notes"][0]
    # QLoRA adds rank-16 A and B to q_proj (256 -> 256) and v_proj (256 -> 64) of both layers
    ac = results["ac"]
    assert results["qlora"]["params"] == ac["params"] + 2 * (16 * (256 + 256) + 16 * (256 + 64))
