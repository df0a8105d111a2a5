"""`python -m bench [--quick] [--only KEY ...]`: run every benchmark, print the table, write the JSON.

Exit status: 0 when every section ran or was skipped for a stated reason (no GPU, say), 1 when
a section failed. Goals that are missed are reported in the table, not turned into a failure:
the bench measures, the reader judges.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console

from bench import (checkpoint_stall, evaluation, fault_tolerance, gpu, many_jobs, memory_accuracy, plan_latency,
                   report, scaling, throughput)
from bench.baselines import ensure_baselines

SECTIONS = (plan_latency, throughput, memory_accuracy, checkpoint_stall, many_jobs, scaling, fault_tolerance, evaluation,
            gpu)
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and steps (a smoke run, minutes)")
    ap.add_argument("--only", nargs="+", choices=[m.KEY for m in SECTIONS], help="run only these sections")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results file (default: {RESULTS})")
    args = ap.parse_args(argv)
    console = Console(stderr=True, highlight=False)

    selected = [m for m in SECTIONS if not args.only or m.KEY in args.only]
    if any(getattr(m, "USES_BASELINES", False) for m in selected):
        installed = ensure_baselines()
        if installed:
            console.print(f"installed baselines: {' '.join(installed)}")
    machine = report.machine()
    start = time.perf_counter()
    sections = []
    for module in SECTIONS:
        section = report.Section(module.KEY, module.TITLE)
        if module not in selected:
            section.skip("not selected (--only)")
        else:
            console.print(f"[bold]{module.TITLE}[/bold] ...")
            t0 = time.perf_counter()
            try:
                module.run(section, args.quick)
            except report.Skip as exc:
                section.skip(str(exc))
            except Exception as exc:  # noqa: BLE001 - one section's failure must not hide the others
                section.status, section.reason = "error", f"{type(exc).__name__}: {str(exc).strip()[-2000:]}"
                section.details["traceback"] = traceback.format_exc()
            section.details["section_wall_s"] = round(time.perf_counter() - t0, 1)
            console.print(f"  {section.status} in {section.details['section_wall_s']} s"
                          + (f": {section.reason}" if section.reason else ""), markup=False)
        sections.append(section)
    if hasattr(os, "getloadavg"):
        machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    width = None if sys.stdout.isatty() else 150
    report.print_table(sections, machine, Console(highlight=False, width=width))
    report.write_json(args.out, sections, machine, args.quick, time.perf_counter() - start)
    console.print(f"wrote {args.out}")
    return 1 if any(s.status == "error" for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
