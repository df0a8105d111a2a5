"""Results of the bench: rows of (figure, ours, baseline, ratio, goal), the machine, the table.

Every number is kept raw in the JSON; the table only formats. A ratio is always ours / baseline,
and each goal is written in those terms, so a reader never has to guess which way is better.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

FORMAT_VERSION = 1


@dataclass
class Row:
    figure: str
    ours: float | None
    unit: str = ""
    baseline: float | None = None
    goal: str = ""
    met: bool | None = None  # None: the row has no goal of its own
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Section:
    key: str
    title: str
    status: str = "ok"  # ok | skipped | error
    reason: str = ""
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str) -> "Section":
        self.status, self.reason = "skipped", reason
        return self

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "status": self.status, "reason": self.reason,
                "rows": [r.to_json() for r in self.rows], "details": self.details}


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements, for the JSON."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    import torch
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    for dist in ("transformers", "accelerate", "torchx"):
        info[dist] = _version(dist)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("tok/s",):
        return f"{value:,.0f} {unit}"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}".strip()
    return f"{value:.3g} {unit}".strip()


def table(sections: list[Section]) -> Table:
    t = Table(title="hpctl bench", show_lines=False)
    for col in ("figure", "ours", "baseline", "ratio", "goal", "met"):
        t.add_column(col, justify="right" if col in ("ours", "baseline", "ratio") else "left")
    for s in sections:
        t.add_section()
        t.add_row(f"[bold]{escape(s.title)}[/bold]", "", "", "", "", "")
        if s.status != "ok":
            t.add_row(escape(f"  {s.status}: {s.reason}"), "", "", "", "", "")
        for r in s.rows:
            met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: ""}[r.met]
            figure = escape(f"  {r.figure}") + (f" [dim]{escape(f'({r.note})')}[/dim]" if r.note else "")
            ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
            t.add_row(figure, _fmt(r.ours, r.unit), _fmt(r.baseline, r.unit), ratio, r.goal, met)
    return t


def print_table(sections: list[Section], mach: dict[str, Any], console: Console) -> None:
    console.print(table(sections))
    console.print(f"machine: {mach['cpu_model']}, {mach['cores']} cores, {mach['memory_gib']} GiB, "
                  f"torch {mach['torch']}, transformers {mach['transformers']}, torchx {mach['torchx']}, "
                  f"load average at start {mach.get('loadavg_at_start')}", highlight=False)


def write_json(path: Path, sections: list[Section], mach: dict[str, Any], quick: bool, wall_s: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format_version": FORMAT_VERSION, "quick": quick, "wall_s": round(wall_s, 1), "machine": mach,
           "sections": {s.key: s.to_json() for s in sections}}
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


class Skip(Exception):
    """A section that cannot run here (no GPU, a dependency not there yet): shown, not failed."""
