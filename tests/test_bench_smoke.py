"""The bench: its measuring instruments are right, and `python -m bench --quick` runs end to end.

The smoke run asserts that every section ran (or, for the GPU, was skipped with a reason) and
wrote its JSON; it asserts no timing thresholds, since CI machines differ and are shared.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("plan_latency", "throughput", "memory_accuracy", "checkpoint_stall", "many_jobs", "scaling",
            "fault_tolerance", "evaluation", "gpu")


def test_live_tensor_bytes_counts_allocations_frees_and_resizes():
    torch = pytest.importorskip("torch")
    from bench.memtrack import LiveTensorBytes

    with LiveTensorBytes() as tracker:
        a = torch.empty(1_000_000)  # 4 MB
        view = a[:10]  # same storage: not counted again
        b = torch.ones(250_000)  # 1 MB
        assert tracker.current == 5_000_000
        del b
        assert tracker.current == 4_000_000
        a.untyped_storage().resize_(0)  # how FSDP2 frees gathered parameters
        assert tracker.current == 0
        a.untyped_storage().resize_(2_000_000)
        assert tracker.current == 2_000_000
        del a, view
        assert tracker.current == 0
    assert tracker.peak == 5_000_000
    assert torch.UntypedStorage.resize_ is tracker._resize  # the patch is undone


def test_checkpoint_stall_separates_saves_from_steps():
    from bench.checkpoint_stall import analyse

    # Saves after steps 4 and 8 cost 0.5 s in the next step and 0.1 s in the one after.
    step = {s: 1.0 for s in range(2, 11)}
    step.update({5: 1.5, 9: 1.5, 6: 1.1, 10: 1.1})
    result = analyse(step, every=4, last=10)
    assert result["step_s"] == pytest.approx(1.0)
    assert result["stall_s"] == pytest.approx(0.5)
    assert result["spill_s"] == pytest.approx(0.1)
    assert result["saves"] == 2


def test_steady_repeats_disturbed_runs_and_keeps_the_least_disturbed(monkeypatch):
    from bench import runner

    monkeypatch.setattr(runner, "wait_quiet", lambda: 0.0)
    loads = iter([1.5, 0.9, 1.2])
    def measure():
        foreign = next(loads)
        return foreign, runner.Timed(wall_s=1.0, cpu_s=1.0, foreign_cpu_s=foreign)
    value, timed, attempts = runner.steady(measure, patient=True, retries=2)
    assert (value, attempts) == (0.9, 3)
    loads = iter([1.5])
    assert runner.steady(measure, patient=False)[2] == 1  # a quick run is never repeated


def test_ratio_is_ours_over_baseline():
    from bench.report import Row

    assert Row("x", 2.0, "s", 4.0).ratio == 0.5
    assert Row("x", None, "s", 4.0).ratio is None
    assert Row("x", 1.0, "s", None).ratio is None


@pytest.mark.slow
def test_gpu_section_reads_gpu_check_output(tmp_path):
    """gpu_check's CPU dry run writes the format the GPU section turns into rows."""
    from bench import gpu

    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(gpu.SCRIPT), "--dry-run", "--variants", "plain,ac,cp", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = gpu.rows(json.loads(out.read_text()))
    assert [r.figure for r in rows] == ["plain vs plain", "ac vs plain", "cp"]
    assert all(r.ours > 0 and r.ratio is not None and "peak" in r.note for r in rows[:2])
    # a variant that cannot run here is a row saying why (cp needs 2 GPUs), not a broken section
    assert rows[2].ours is None and rows[2].note.startswith("skipped: context parallelism 2 needs 2 or more GPUs")


@pytest.mark.slow
def test_quick_bench_runs_every_section(tmp_path):
    out = tmp_path / "latest.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert "hpctl bench" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["quick"] is True
    assert set(doc["sections"]) == set(SECTIONS)
    for key in SECTIONS[:-1]:  # every CPU section really ran and produced numbers
        section = doc["sections"][key]
        assert section["status"] == "ok", (key, section["reason"])
        assert section["rows"] and all(r["ours"] is not None for r in section["rows"]), key
    gpu = doc["sections"]["gpu"]
    assert gpu["status"] == "ok" or (gpu["status"] == "skipped" and gpu["reason"])
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["torch"] and doc["machine"]["cpu_model"]
