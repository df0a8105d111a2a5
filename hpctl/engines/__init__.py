"""Engines: existing programs a recipe is written for, which hpctl plans and launches but never
reimplements (design.md, "Engines"). Today one: verl on Ray (`run.model_type: verl`).

`engine_of(spec_data)` says which engine runs a spec (None: hpctl's trainer or a custom entry
point); the engine's module owns its plan-time rules, summary and launch command."""
from __future__ import annotations

from typing import Any


def engine_of(spec_data: Any) -> Any:
    """The engine (hpctl.engines.verl.Engine) that runs this spec or bare recipe, or None."""
    from hpctl.engines import verl
    return verl.engine_of(spec_data)
