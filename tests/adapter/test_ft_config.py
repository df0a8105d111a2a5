"""trainer.fault_tolerance: the trainer's torch-free rules for replica groups (adapter/ft_config.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from adapter.config import ConfigError, from_recipe, problems
from adapter.mesh import grad_accumulation
from tests.helpers.trainer import tiny_recipe

FT = "trainer.fault_tolerance"


def ft_recipe(tmp_path: Path, devices: int = 4, model: dict | None = None, **ft: object) -> dict:
    return tiny_recipe(tmp_path, trainer={"devices": devices, "fault_tolerance": {"enabled": True, **ft}},
                       model={"global_batch_size": None, **(model or {})})


def refusals(recipe: dict, world: int | None) -> dict[str, str]:
    return {e.key: e.message for e in problems(recipe, world)}


def test_off_by_default_and_when_disabled(tmp_path: Path) -> None:
    assert from_recipe(tiny_recipe(tmp_path), 1).fault_tolerance is None
    off = tiny_recipe(tmp_path, trainer={"fault_tolerance": {"enabled": False, "replica_groups": 1}})
    assert from_recipe(off, 1).fault_tolerance is None


def test_reads_the_section_and_splits_the_batch_over_the_groups(tmp_path: Path) -> None:
    cfg = from_recipe(ft_recipe(tmp_path, replica_groups=2, min_replicas=2, lighthouse_port=24510, timeout_s=5,
                                quorum_timeout_s=20, heartbeat_timeout_s=2.5, max_restarts=1,
                                model={"global_batch_size": 8}), 4)
    ft = cfg.fault_tolerance
    assert (ft.replica_groups, ft.min_replicas, ft.lighthouse_port, ft.timeout_s, ft.quorum_timeout_s,
            ft.heartbeat_timeout_s, ft.max_restarts) == (2, 2, 24510, 5, 20, 2.5, 1)
    assert ft.group_world(4) == 2
    # 8 sequences per step = micro 2 x 2 ranks per group x 2 groups x accumulation 1
    assert grad_accumulation(cfg, 2) == 1
    defaults = from_recipe(ft_recipe(tmp_path, replica_groups=2), 4).fault_tolerance
    assert (defaults.min_replicas, defaults.lighthouse_port, defaults.heartbeat_timeout_s,
            defaults.max_restarts) == (1, 29510, 5, 3)


def test_replica_groups_are_required_and_at_least_two(tmp_path: Path) -> None:
    assert "is required" in refusals(ft_recipe(tmp_path), 4)[f"{FT}.replica_groups"]
    assert "must be >= 2" in refusals(ft_recipe(tmp_path, replica_groups=1), 4)[f"{FT}.replica_groups"]
    got = refusals(ft_recipe(tmp_path, replica_groups=2, min_replicas=3, timeout_s=0), 4)
    assert "more than replica_groups (2)" in got[f"{FT}.min_replicas"]
    assert "must be positive" in got[f"{FT}.timeout_s"]


def test_a_lost_group_must_be_dropped_before_the_survivors_quorum_times_out(tmp_path: Path) -> None:
    # torchft forms no quorum while the lost group still counts (two groups: one is not a majority),
    # so a heartbeat timeout at or over the quorum timeout would end the survivors too.
    got = refusals(ft_recipe(tmp_path, replica_groups=2, quorum_timeout_s=10, heartbeat_timeout_s=10), 4)
    assert got[f"{FT}.heartbeat_timeout_s"].startswith("10 s is not less than quorum_timeout_s (10 s)")
    assert "must be positive" in refusals(ft_recipe(tmp_path, replica_groups=2, heartbeat_timeout_s=0), 4)[
        f"{FT}.heartbeat_timeout_s"]
    assert not refusals(ft_recipe(tmp_path, replica_groups=2, quorum_timeout_s=10, heartbeat_timeout_s=9), 4)


def test_world_not_divisible_by_the_groups(tmp_path: Path) -> None:
    got = refusals(ft_recipe(tmp_path, devices=3, replica_groups=2), 3)
    assert got[f"{FT}.replica_groups"] == "2 does not divide the world size 3 (trainer.devices x trainer.num_nodes)"


def test_tensor_parallel_across_groups(tmp_path: Path) -> None:
    got = refusals(ft_recipe(tmp_path, devices=4, replica_groups=4, model={"tensor_model_parallel_degree": 2}), 4)
    assert "tensor parallel (2 processes) would span replica groups of 1 processes" in got[f"{FT}.replica_groups"]
    assert not refusals(ft_recipe(tmp_path, devices=4, replica_groups=2,
                                  model={"tensor_model_parallel_degree": 2}), 4)


def test_hsdp_shard_group_must_fill_a_group(tmp_path: Path) -> None:
    hsdp = {"sharding_strategy": "hybrid_shard", "shard_degree": 1}
    got = refusals(ft_recipe(tmp_path, devices=4, replica_groups=2, model=hsdp), 4)
    assert "2 x model.shard_degree (1) x tensor parallel (1) is 2, not the world size 4" in got[f"{FT}.replica_groups"]
    assert not refusals(ft_recipe(tmp_path, devices=4, replica_groups=2, model={**hsdp, "shard_degree": 2}), 4)


def test_the_trainer_refuses_the_same_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        from_recipe(ft_recipe(tmp_path, devices=3, replica_groups=2), 3)
    assert exc.value.key == f"{FT}.replica_groups"
