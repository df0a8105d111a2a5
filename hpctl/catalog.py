"""The recipe catalog as a table: what `hpctl recipes list` shows.

Read straight from each recipe's own file (no merge or resolve), so listing stays fast; fields
that are interpolations show as unknown.
"""
from __future__ import annotations

from typing import Any

from hpctl.errors import HpctlError
from hpctl.loader import load_file
from hpctl.modelsize import param_count
from hpctl.workspace import Workspace


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def kind(recipe: dict[str, Any]) -> str:
    model = recipe.get("model") or {}
    peft = (model.get("peft") or {}).get("peft_type")
    if peft:
        return str(peft)
    if (model.get("dpo") or {}).get("enabled"):
        return "dpo"
    return "fine-tune" if model.get("do_finetune") else "pretrain"


def describe(name: str, recipe: dict[str, Any]) -> dict[str, Any]:
    model = recipe.get("model") or {}
    trainer = recipe.get("trainer") or {}
    try:
        params = param_count(model) if all(_int(model.get(k)) for k in ("hidden_size", "num_hidden_layers")) else None
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        params = None
    human = "?" if not params else (f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.1f}M")
    nodes, devices = _int(trainer.get("num_nodes")), _int(trainer.get("devices"))
    return {"name": name, "family": model.get("model_type"), "params": params, "params_h": human,
            "type": kind(recipe), "nodes": nodes, "devices": devices,
            "layout": f"{nodes or '?'} x {devices or '?'}", "seq": _int(model.get("max_context_width"))}


def describe_all(ws: Workspace) -> list[dict[str, Any]]:
    rows = []
    for name, found in sorted(ws.recipes().items()):
        try:
            rows.append(describe(name, load_file(found.path, found.display).data))
        except HpctlError as e:
            rows.append({"name": name, "family": None, "params": None, "params_h": "?", "type": "unreadable",
                         "nodes": None, "devices": None, "layout": "?", "seq": None, "error": e.render()})
    return rows
