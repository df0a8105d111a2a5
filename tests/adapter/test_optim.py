"""Learning-rate schedules."""
from __future__ import annotations

import math

import pytest

from adapter.trainconfig import SchedConfig
from adapter.optim import lr_at


def sched(name: str, **kw: float) -> SchedConfig:
    return SchedConfig(**{"name": name, "warmup_steps": 0, "constant_steps": 0, "min_lr": 0.0, "max_steps": 10, **kw})


def test_cosine_annealing_with_warmup_and_constant_tail() -> None:
    s = sched("CosineAnnealing", warmup_steps=2, constant_steps=3, min_lr=0.1)
    assert [lr_at(i, 1.0, s) for i in (0, 1)] == [0.5, 1.0]
    assert lr_at(2, 1.0, s) == pytest.approx(1.0)
    assert lr_at(2 + 5 / 2, 1.0, s) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through 5 decay steps
    assert [lr_at(i, 1.0, s) for i in (7, 8, 9, 20)] == pytest.approx([0.1] * 4)
    assert all(lr_at(i, 1.0, s) >= lr_at(i + 1, 1.0, s) for i in range(1, 12))


def test_linear_and_constant() -> None:
    assert [lr_at(i, 2.0, sched("linear", min_lr=1.0)) for i in (0, 5, 10, 15)] == [2.0, 1.5, 1.0, 1.0]
    assert [lr_at(i, 2.0, sched("constant", warmup_steps=4)) for i in (0, 3, 4, 100)] == [0.5, 2.0, 2.0, 2.0]
    assert math.isclose(lr_at(0, 1.0, sched("CosineAnnealing")), 1.0)
