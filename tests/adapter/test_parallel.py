"""FSDP2, tensor parallelism, hybrid sharding and 2-D meshes on CPU (gloo) with real processes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.trainer import losses, ok, records, tiny_recipe, torchrun

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5


def assert_close(got: dict[int, float], want: dict[int, float]) -> None:
    assert got.keys() == want.keys()
    for step in want:
        assert abs(got[step] - want[step]) < TOLERANCE, (step, got[step], want[step])


def test_fsdp2_with_two_processes_matches_one(baseline: Path, fsdp2: Path) -> None:
    base = losses(baseline)
    assert sorted(base) == [1, 2, 3, 4, 5, 6]
    assert base[6] < base[1]
    assert_close(losses(fsdp2), base)


def test_tensor_parallel_matches_one_process(baseline: Path, tmp_path: Path) -> None:
    """Also: with MLflow (a directory store) and W&B (offline) asked for, only rank 0 tracks: one
    run each, the ones tracking.json names."""
    results, mlruns, wandb_dir = tmp_path / "results", tmp_path / "mlruns", tmp_path / "wandb"
    recipe = tiny_recipe(results, model={"tensor_model_parallel_degree": 2}, exp_manager={
        "create_mlflow_logger": True, "mlflow_logger_kwargs": {"tracking_uri": str(mlruns)},
        "create_wandb_logger": True, "wandb_logger_kwargs": {"mode": "offline", "save_dir": str(wandb_dir)}})
    out = ok(torchrun(recipe, 2)).stdout
    assert "dp_shard=1 tp=2" in out
    assert_close(losses(results), losses(baseline))
    ids = json.loads((results / "checkpoints" / "tracking.json").read_text())
    assert [p.parent.name for p in mlruns.glob("*/*/meta.yaml")] == [ids["mlflow"]]
    assert [p.name.rsplit("-", 1)[-1] for p in (wandb_dir / "wandb").glob("offline-run-*")] == [ids["wandb"]]
    assert out.count("adapter: MLflow run ") == out.count("adapter: W&B offline run ") == 1, out


def test_two_dimensional_mesh_matches_one_process(baseline: Path, tmp_path: Path) -> None:
    """dp 2 x tp 2 keeps the global batch of 4, so it must follow the reference."""
    results = tmp_path / "results"
    out = ok(torchrun(tiny_recipe(results, trainer={"max_steps": 3}, model={"tensor_model_parallel_degree": 2}), 4)).stdout
    assert "dp_replicate=1 dp_shard=2 tp=2" in out
    assert_close(losses(results), {s: l for s, l in losses(baseline).items() if s <= 3})


def test_hybrid_shard_bf16_with_activation_checkpointing_runs(tmp_path: Path) -> None:
    """HSDP over 2 x 2 processes in bf16 (fp32 reduction) with activation checkpointing."""
    results = tmp_path / "results"
    recipe = tiny_recipe(results, trainer={"max_steps": 3, "precision": "bf16", "limit_val_batches": 0},
                         model={"sharding_strategy": "hybrid_shard", "shard_degree": 2, "global_batch_size": 8,
                                "activation_checkpointing": True})
    out = ok(torchrun(recipe, 4)).stdout
    assert "dp_replicate=2 dp_shard=2 tp=1" in out
    rows = records(results)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and 5.0 < r["loss"] < 6.0 for r in rows)
    assert all(r["memory_gb"] > 0 and r["tokens_per_s"] > 0 for r in rows)
