"""Engines: existing programs a recipe is written for, which hpctl plans and launches but never
reimplements (design.md, "Engines"): verl on Ray (`run.model_type: verl`, hpctl.engines.verl) and
lm-evaluation-harness for evaluation recipes (an `evaluation` section, hpctl.engines.evaluation).

`engine_of(spec_data)` says which engine runs a spec (None: hpctl's trainer or a custom entry
point). An engine is its module's `Engine`: `name`, `program` (the plan's line), `ray` (whether
the backends start a Ray cluster for it; else the job runs under their usual torchrun launch),
`checks(spec, host)` and `summary(spec, artifact, device_memory_gb)`; the module owns those rules."""
from __future__ import annotations

from typing import Any


def engine_of(spec_data: Any) -> Any:
    """The engine (hpctl.engines.verl.Engine or hpctl.engines.evaluation.Engine) that runs this
    spec or bare recipe, or None."""
    from hpctl.engines import evaluation, verl
    return verl.engine_of(spec_data) or evaluation.engine_of(spec_data)


def uses_ray(spec_data: Any) -> bool:
    """Whether the spec's engine runs on a Ray cluster the backend starts (verl): each backend
    then renders its Ray launch instead of its usual torchrun one."""
    engine = engine_of(spec_data)
    return engine is not None and engine.ray
