"""How plans, jobs and errors look on a terminal (rich) and in a pull request (markdown)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from hpctl.backends.base import RUNNING, JobRecord, JobStatus
from hpctl.diff import DESTROY, NOOP, SYMBOL, Change
from hpctl.ft_launch import status_note
from hpctl.tables import MANY_ROWS, plain

if TYPE_CHECKING:
    from hpctl.plan import Plan  # annotations only: `hpctl status` never loads the planner

STYLE = {"create": "green", "update": "yellow", "replace": "magenta", "destroy": "red", "no-op": "dim"}


def _fmt(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else json.dumps(value)


def _human(n: int | None) -> str:
    if not n:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def summary_rows(plan: Plan) -> list[tuple[str, str]]:
    s = plan.summary
    par = f"tp={s['tensor_parallel']} ep={s['expert_parallel']} cp={s['context_parallel']} " \
          f"sharding={s['sharding']}" + (f" shard_degree={s['shard_degree']}" if s.get("shard_degree") else "")
    mem = "?" if s.get("memory_gb_per_device") is None else f"{s['memory_gb_per_device']} GB"
    if s.get("memory_fraction") is not None:
        mem += f" ({s['memory_fraction']:.0%} of device memory)"
    tracking = [("tracking", "; ".join(s["tracking"]))] if s.get("tracking") else []
    if s.get("evaluation"):  # an evaluation job: lm-eval's settings instead of the trainer's
        from hpctl.engines.evaluation import summary_rows as evaluation_rows
        return [("job", plan.job), ("recipe", plan.recipe), ("cluster", f"{plan.cluster} ({plan.backend})"),
                *evaluation_rows(s["evaluation"]), ("results", str(s["results_dir"])), ("program", s["entry"]),
                *([("after", s["after"])] if s.get("after") else []), ("tag", s.get("tag") or "made at the workspace's first apply")]
    return [
        ("job", plan.job), ("recipe", plan.recipe), ("cluster", f"{plan.cluster} ({plan.backend})"),
        ("model", f"{s['model']} ({_human(s.get('parameters'))} parameters"
                  + (f", {_human(s['active_parameters'])} active)" if s.get("active_parameters") else ")")
                  + (f", {s['peft']}" if s.get("peft") else "")),
        ("devices", f"{s['nodes']} x {s['devices_per_node']} {s['accelerator']}"),
        ("parallelism", par), ("precision", str(s["precision"] or "?")),
        ("steps", str(s["max_steps"] or "?")), ("sequence", str(s["sequence_length"] or "?")),
        ("results", str(s["results_dir"])), *tracking, ("memory/device", mem),
    ] + [(k, str(v)) for k, v in (s.get("engine") or {}).items() if k != "name" and v is not None] \
      + ([("program", s["entry"])] if s.get("entry") else []) \
      + ([("network", s["network"])] if s.get("network") else []) \
      + ([("fault tolerance", s["fault_tolerance"])] if s.get("fault_tolerance") else []) \
      + ([("after", s["after"])] if s.get("after") else []) \
      + [("tag", s.get("tag") or "made at the workspace's first apply")]  # plans saved before tags had none


def change_lines(change: Change) -> list[str]:
    sym = SYMBOL[change.action]
    if change.action == NOOP:
        return []
    lines = [f"{sym} job {change.job}: {change.action} ({change.reason})"]
    for k in change.keys:
        mark = "  # forces replacement" if k.forces_replace else ""
        if k.old == "(absent)":
            lines.append(f"    + {k.path} = {_fmt(k.new)}")
        elif k.new == "(absent)":
            lines.append(f"    - {k.path} = {_fmt(k.old)}")
        else:
            lines.append(f"    ~ {k.path}: {_fmt(k.old)} -> {_fmt(k.new)}{mark}")
    if change.artifact_changed and change.action != DESTROY and change.keys == []:
        lines.append("    ~ the rendered artifact changed")
    return lines


def footer(plan: Plan) -> str:
    if not plan.has_changes:
        return "No changes. The job matches the configuration."
    c = plan.counts()
    return f"Plan: {c['add']} to add, {c['change']} to change, {c['destroy']} to destroy."


def print_plan(plan: Plan, console: Console, show_artifact: bool = True) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in summary_rows(plan):
        table.add_row(k, v)
    console.print(table)
    for c in plan.checks:
        if c["severity"] == "warning":
            console.print("[yellow]warning[/yellow] " + escape(f"[{c['id']}] {c['message']}"), highlight=False)
    for note in plan.summary.get("notes") or []:  # plans saved before notes had none
        console.print("note: " + note, highlight=False, markup=False)
    console.print()
    if plan.has_changes:
        console.print("hpctl will perform the following actions:\n", highlight=False)
        for line in change_lines(plan.change):
            console.print(line, style=STYLE[plan.change.action], highlight=False, markup=False)
        console.print()
    if show_artifact and plan.change.action != DESTROY:
        console.print(f"[bold]{plan.artifact.kind}[/bold]:")
        if console.is_terminal and console.color_system:
            console.print(Syntax(plan.artifact.text, plan.artifact.language, theme="ansi_dark",
                                 background_color="default", word_wrap=True))
        else:  # piped or --no-color: the exact text, never wrapped or cropped
            console.out(plan.artifact.text.rstrip("\n"), highlight=False)
    console.print(footer(plan), style="bold", highlight=False)


def plan_markdown(plan: Plan) -> str:
    out = [f"### hpctl plan: `{plan.job}`", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v.replace('|', '/')} |" for k, v in summary_rows(plan)]
    warnings = [c for c in plan.checks if c["severity"] == "warning"]
    if warnings:
        out += ["", *[f"- :warning: `{c['id']}` {c['message']}" for c in warnings]]
    if plan.summary.get("notes"):
        out += ["", *[f"- note: {note}" for note in plan.summary["notes"]]]
    lines = change_lines(plan.change)
    if lines:
        out += ["", "```diff", *lines, "```"]
    if plan.change.action != DESTROY:
        out += ["", f"<details><summary>{plan.artifact.kind}</summary>", "",
                f"```{plan.artifact.language}", plan.artifact.text.rstrip("\n"), "```", "", "</details>"]
    out += ["", f"**{footer(plan)}**", ""]
    return "\n".join(out)


STATUS_HEADERS = ("job", "cluster", "id", "state", "step", "loss", "tokens/s", "ETA")


def eta(step: int | None, max_steps: int | None, step_time_s: float | None, state: str) -> str:
    """Time left of a running job at its recent step time, "-" when it is not running or unknown."""
    if step is None or not max_steps or not step_time_s or state != RUNNING:
        return "-"
    return f"{int((max_steps - step) * step_time_s)}s"


def status_row(record: JobRecord, st: JobStatus, spark: bool = False) -> tuple[str, ...]:
    """One job's `hpctl status` row; with `spark`, the recent losses drawn beside the latest one."""
    m = st.metrics or {}
    trend = ""
    if spark:
        from hpctl.plot import read_metrics, series, sparkline
        trend = " " + sparkline(series(read_metrics(record.results_dir, tail_bytes=65536), "loss")[1])
    state = st.state + (f" ({st.backend_state})" if st.backend_state and st.backend_state.upper() != st.state else "")
    if st.exit_code not in (None, 0):
        state += f" exit {st.exit_code}"
    state += status_note(m)  # a fault-tolerant job: live replica groups, recoveries
    step, max_steps = m.get("step"), m.get("max_steps") or record.spec.get("recipes", {}).get("trainer", {}).get("max_steps")
    return (record.name, record.cluster, record.job_id, state,
            f"{step}/{max_steps}" if step is not None else "-",
            f"{m['loss']:.4f}{trend}" if isinstance(m.get("loss"), (int, float)) else "-",
            f"{m['tokens_per_s']:.0f}" if isinstance(m.get("tokens_per_s"), (int, float)) else "-",
            eta(step, max_steps, m.get("step_time_s"), st.state))


def status_table(rows: list[tuple[JobRecord, JobStatus]], spark: bool = False) -> Table | Text:
    """`hpctl status`: a table, or plain columns when there are many jobs (rich tables get slow)."""
    cells = [status_row(record, st, spark) for record, st in rows]
    if len(cells) > MANY_ROWS:
        return Text(plain(STATUS_HEADERS, cells))
    table = Table(*STATUS_HEADERS)
    for row in cells:
        table.add_row(*row)
    return table
