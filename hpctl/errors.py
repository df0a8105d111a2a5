"""The one error type hpctl raises for bad input.

Every user-facing failure carries where it happened (file, line, column, key path), what was
expected, what was found and a hint, so the CLI can print one clear message and exit 1 without a
traceback.
"""
from __future__ import annotations

import importlib
from typing import Any

from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    """Where a value came from: a file position, a command-line override, or a built-in default."""

    file: str | None = None
    line: int | None = None  # 1-based
    col: int | None = None  # 1-based
    override: int | None = None  # 1-based index of the command-line override
    text: str | None = None  # the override as typed, for messages
    via: str | None = None  # how the value got here from that position: "from instance type X" (computed
    # from it), "from scale_config for N nodes" (moved from another key); shown after the position

    def __str__(self) -> str:
        if self.override is not None:
            where = f"override {self.override} ({self.text})" if self.text else f"override {self.override}"
        elif self.file is None:
            where = "default"
        else:
            where = self.file if self.line is None else f"{self.file}:{self.line}:{self.col or 1}"
        if not self.via:
            return where
        return self.via if where == "default" else f"{where} ({self.via})"

    def to_json(self) -> dict:
        if self.override is not None:
            out = {"kind": "override", "index": self.override, "text": self.text}
        elif self.file is None:
            out = {"kind": "default"}
        else:
            out = {"kind": "file", "file": self.file, "line": self.line, "col": self.col}
        return {**out, "via": self.via} if self.via else out



@dataclass
class Problem:
    """One located complaint about the input."""

    message: str
    origin: Origin | None = None
    key: str | None = None
    expected: str | None = None
    found: str | None = None
    hint: str | None = None

    def render(self) -> str:
        where = f"{self.origin}: " if self.origin and str(self.origin) != "default" else ""
        key = f"{self.key}: " if self.key else ""
        parts = [f"{where}{key}{self.message}"]
        if self.expected is not None:
            parts.append(f"  expected: {self.expected}")
        if self.found is not None:
            parts.append(f"  found:    {self.found}")
        if self.hint:
            parts.append(f"  hint:     {self.hint}")
        return "\n".join(parts)

    def to_json(self) -> dict:
        return {
            "message": self.message,
            "origin": self.origin.to_json() if self.origin else None,
            "key": self.key,
            "expected": self.expected,
            "found": self.found,
            "hint": self.hint,
        }


class HpctlError(Exception):
    """Bad input or a failed operation, with one or more located problems."""

    def __init__(self, message: str | Problem | list[Problem], **kw: object) -> None:
        if isinstance(message, list):
            self.problems = message
        elif isinstance(message, Problem):
            self.problems = [message]
        else:
            self.problems = [Problem(message, **kw)]  # type: ignore[arg-type]
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(p.render() for p in self.problems)


def optional_import(module: str, extra: str, purpose: str) -> Any:
    """An optional dependency, imported when first needed, or a clear error naming the extra that
    installs it (never an internal error from an ImportError deep in a backend)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise HpctlError(f"{purpose} needs the {module.split('.')[0]} package",
                         hint=f"pip install 'hpctl[{extra}]'") from None
