"""Reading a count from an unvalidated mapping: the one lenient integer reader.

hpctl's estimates and checks and the model-size formulas read recipe values that the schema and
the trainer's Reader judge elsewhere; here a value that is not a whole number is simply absent
(None), so a wrong type is reported once, by its owner, and never crashes an estimate.
Torch-free.
"""
from __future__ import annotations

from typing import Any


def whole(value: Any) -> int | None:
    """An integer, or a float with no fractional part, as an int; None for anything else (bools too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def positive_int(value: Any) -> int | None:
    """`whole(value)` when it is at least 1, else None."""
    n = whole(value)
    return n if n is not None and n >= 1 else None
