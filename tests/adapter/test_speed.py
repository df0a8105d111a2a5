"""The trainer's fast paths keep the math: the mode per world size, clipping without a host sync,
and metrics that average the steps between records. (Their speed is `python -m bench`'s job.)"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from adapter import metrics, parallel
from adapter.trainconfig import ParallelConfig

FP32 = ParallelConfig(tp=1, sharding_strategy="full_shard", shard_degree=None, activation_checkpointing=False,
                      cpu_offload=False, compile=False, precision="fp32")


def layout(replicate: int, shard: int, tp: int) -> parallel.Layout:
    return parallel.Layout(shape=parallel.MeshShape(replicate, shard, tp), mesh=None, dp_group=None, dp_rank=0)


def test_fsdp_wraps_only_where_it_does_something() -> None:
    assert not parallel.wraps_fsdp(layout(1, 1, 1), FP32)
    assert not parallel.wraps_fsdp(layout(1, 1, 1), replace(FP32, activation_checkpointing=True, compile=True))
    assert parallel.wraps_fsdp(layout(1, 2, 1), FP32)
    assert parallel.wraps_fsdp(layout(2, 1, 1), FP32)  # no_shard over 2 processes: FSDP2 reduces gradients
    assert parallel.wraps_fsdp(layout(1, 1, 2), FP32)
    assert parallel.wraps_fsdp(layout(1, 1, 1), replace(FP32, precision="bf16"))  # FSDP2's mixed precision
    assert parallel.wraps_fsdp(layout(1, 1, 1), replace(FP32, cpu_offload=True))


def test_set_gradient_sync_is_a_no_op_on_a_plain_module() -> None:
    parallel.set_gradient_sync(torch.nn.Linear(2, 2), False)  # must not raise


@pytest.mark.parametrize("max_norm", [0.05, 100.0, 0.0])
def test_clipping_matches_torch(max_norm: float) -> None:
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for a, b in zip(ours, theirs):
        a.grad = torch.randn_like(a)
        b.grad = a.grad.clone()
    before = [a.grad.clone() for a in ours]
    norm = parallel.clip_grad_norm_(ours, max_norm)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm if max_norm > 0 else float("inf"))
    assert torch.equal(norm, want)
    for a, b in zip(ours, theirs):
        assert torch.equal(a.grad, b.grad)
    clipped = 0 < max_norm < float(norm)
    assert all(torch.equal(a.grad, g) != clipped for a, g in zip(ours, before))


def test_window_reports_the_mean_of_the_steps_since_the_last_record() -> None:
    window = metrics.Window()
    for seconds, wait in ((1.0, 0.1), (2.0, 0.2), (3.0, 0.3)):
        window.add(seconds, wait)
    assert window.take() == pytest.approx((2.0, 0.2))
    window.add(5.0, 0.5)
    assert window.take() == pytest.approx((5.0, 0.5))
