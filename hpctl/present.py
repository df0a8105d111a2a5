"""How plans, jobs and errors look on a terminal (rich) and in a pull request (markdown)."""
from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from hpctl.diff import DESTROY, NOOP, SYMBOL, Change
from hpctl.plan import Plan

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
        ("model", f"{s['model']} ({_human(s.get('parameters'))} parameters)"
                  + (f", {s['peft']}" if s.get("peft") else "")),
        ("devices", f"{s['nodes']} x {s['devices_per_node']} {s['accelerator']}"),
        ("parallelism", par), ("precision", str(s["precision"] or "?")),
        ("steps", str(s["max_steps"] or "?")), ("sequence", str(s["sequence_length"] or "?")),
        ("results", str(s["results_dir"])), *tracking, ("memory/device", mem),
    ] + ([("program", s["entry"])] if s.get("entry") else []) \
      + ([("network", s["network"])] if s.get("network") else []) \
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
    lines = change_lines(plan.change)
    if lines:
        out += ["", "```diff", *lines, "```"]
    if plan.change.action != DESTROY:
        out += ["", f"<details><summary>{plan.artifact.kind}</summary>", "",
                f"```{plan.artifact.language}", plan.artifact.text.rstrip("\n"), "```", "", "</details>"]
    out += ["", f"**{footer(plan)}**", ""]
    return "\n".join(out)
