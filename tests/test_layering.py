"""The packages' layering: adapter/ (the trainer) is the bottom layer and hpctl sits on it.

The trainer runs where hpctl is not installed (a SageMaker container, a cluster node with only the
code), and a rule both packages use is owned by the trainer's side, which hpctl asks. Every import
counts, those inside functions and under TYPE_CHECKING included: they hide a loop, they do not
remove it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ADAPTER = Path(__file__).resolve().parents[1] / "adapter"
MODULES = {("adapter." + p.stem if p.stem != "__init__" else "adapter"): p for p in sorted(ADAPTER.glob("*.py"))}


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth; `from adapter import x` names
    adapter.x when x is a module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                    if f"{node.module}.{alias.name}" in MODULES]
    return out


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_adapter_module_imports_hpctl(module):
    found = [f"{MODULES[module].name}:{line} imports {name}" for line, name in imported(MODULES[module])
             if name.split(".")[0] == "hpctl"]
    assert sorted(set(found)) == []


def test_the_walk_sees_imports_inside_functions_and_type_checking(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import hpctl.spec\n"
                     "def f():\n    from hpctl.plan import Plan\n")
    assert [name for _, name in imported(probe)] == ["typing", "hpctl.spec", "hpctl.plan"]
def test_adapter_modules_import_no_circle():
    graph = {m: {name for _, name in imported(p) if name in MODULES and name != m} for m, p in MODULES.items()}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        for nxt in sorted(graph[module]):
            if nxt in path:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert circles == []




HPCTL = ADAPTER.parent / "hpctl"
BACKENDS = ("local", "slurm", "kubernetes", "sagemaker")  # hpctl.backends.MODULES' modules


def _backend_of(module: str) -> str | None:
    """The backend a hpctl.backends module belongs to (sagemaker_checks is SageMaker's), else None."""
    name = module.removeprefix("hpctl.backends.")
    return next((b for b in BACKENDS if module.startswith("hpctl.backends.") and name.split("_")[0] == b), None)


def test_only_a_backend_imports_its_own_modules():
    """What one scheduler needs lives in its backend behind the Backend hooks (preflight, doctor):
    no other hpctl module, and no other backend, imports a backend's modules."""
    found = []
    for path in sorted(HPCTL.rglob("*.py")):
        module = ".".join(path.relative_to(HPCTL.parent).with_suffix("").parts)
        names = [(n.lineno, f"{n.module}.{a.name}") for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.ImportFrom) and n.module for a in n.names]
        for line, name in imported(path) + names:
            owner = _backend_of(name)
            if owner is not None and owner != _backend_of(module):
                found.append(f"{module}:{line} imports {name}")
    assert sorted(set(found)) == []
