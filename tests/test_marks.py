"""Every test that starts a process carries the `slow` mark, so `-m "not slow"` is the quick,
in-process suite. A test starts a process when it (or a helper function of its module, or a
fixture it names that is known to) calls subprocess, torchrun or srun-style launchers."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SPAWN = {"subprocess.run", "subprocess.Popen", "subprocess.check_output", "subprocess.call", "subprocess.check_call",
         "torchrun", "srun_style", "train_on_two_ranks"}
SPAWNING_FIXTURES = {"run_hpctl", "hpctl_bin", "baseline", "fsdp2"}


def _marked(decorators: list[ast.expr]) -> bool:
    return any("slow" in ast.unparse(d) for d in decorators)


def unmarked_spawning_tests(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    module_slow = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                      and "slow" in ast.unparse(n.value) for n in tree.body)
    funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    called = {name: {ast.unparse(c.func).rsplit(".", 1)[-1] if ast.unparse(c.func) not in SPAWN else ast.unparse(c.func)
                     for c in ast.walk(fn) if isinstance(c, ast.Call)} for name, fn in funcs.items()}
    spawners = {name for name, calls in called.items() if calls & SPAWN}
    grown = True
    while grown:  # a helper that calls a spawning helper spawns too
        before = len(spawners)
        spawners |= {name for name, calls in called.items() if calls & spawners}
        grown = len(spawners) > before
    found = []
    for node in tree.body:
        cls_slow = isinstance(node, ast.ClassDef) and _marked(node.decorator_list)
        tests = [node] if isinstance(node, ast.FunctionDef) else \
            [n for n in node.body if isinstance(n, ast.FunctionDef)] if isinstance(node, ast.ClassDef) else []
        for fn in tests:
            spawns = fn.name in spawners or {a.arg for a in fn.args.args} & SPAWNING_FIXTURES
            if fn.name.startswith("test") and spawns and not (module_slow or cls_slow or _marked(fn.decorator_list)):
                found.append(f"{path.name}:{fn.lineno} {fn.name}" if TESTS not in path.parents
                             else f"{path.relative_to(TESTS)}:{fn.lineno} {fn.name}")
    return found


def test_every_process_spawning_test_is_marked_slow():
    assert [t for p in sorted(TESTS.rglob("test_*.py")) for t in unmarked_spawning_tests(p)] == []


def test_the_scan_sees_a_helper_that_spawns(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text("import subprocess\ndef helper():\n    subprocess.run(['true'])\n"
                     "def test_a():\n    helper()\ndef test_b():\n    pass\n")
    assert [line.split()[-1] for line in unmarked_spawning_tests(probe)] == ["test_a"]
