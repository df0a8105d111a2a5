"""Fuzzing the config pipeline (hypothesis): mutated real recipes, cluster configs and overrides.

Each example writes a mutated input into a scratch workspace and runs the real CLI in-process
(`hpctl plan --json` or `hpctl validate --json`). Properties:

- the exit code is 0 or 1, never a traceback or an "internal error";
- an error comes as located problems (each names a file position, an override or a key);
- nothing is written into the workspace (plan and validate write nothing, least of all on error);
- no example runs longer than HANG_S (a hang fails the example, it does not stall the suite);
- whenever `validate` passes, the trainer's own config (adapter.config.from_recipe) accepts the
  resolved recipe: the plan is the truth.

CI runs a few examples per property, derandomized. The long run (10,000+ examples, random):
    HPCTL_FUZZ_EXAMPLES=2500 HPCTL_FUZZ_LOG=fuzz.jsonl nice pytest -p no:cacheprovider -q tests/test_fuzz.py
(four properties x 2,500). With HPCTL_FUZZ_LOG every failing example is appended there (input,
arguments, error) and the run goes on; without it hypothesis stops at the first and shrinks it.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the test extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.helpers.workspace import DEFAULT_FILES, MINI_RECIPE, REPO, SHARED, listing, write_files  # noqa: E402

LONG = int(os.environ.get("HPCTL_FUZZ_EXAMPLES") or 0)
LOG = os.environ.get("HPCTL_FUZZ_LOG")
COUNT = [0]  # examples checked in this process (the long run writes it beside the log)
FUZZ = settings(max_examples=LONG or 8, deadline=None, derandomize=not LONG, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)
HANG_S = 10.0  # CPU seconds: a busy shared machine stretches wall time, not CPU time

# Real inputs to mutate: the workspace's mini recipe, the built-in recipes and clusters, and
# HyperPod v1 recipes where ../shared is present.
RECIPES = {"mini": MINI_RECIPE} | {p.stem: p.read_text() for p in sorted((REPO / "recipes").glob("*/*.yaml"))}
_HYPERPOD = SHARED / "peer-recipes" / "hyperpod-v1" / "recipes" / "training" / "llama"
if _HYPERPOD.is_dir():
    RECIPES |= {"hp_" + p.stem: p.read_text() for p in sorted(_HYPERPOD.glob("*.yaml"))[:6]}
CLUSTERS = {p.stem: p.read_text() for p in sorted((REPO / "clusters").glob("*.yaml"))}

# ---------------------------------------------------------------------------------------------
# strategies


def _finite_or_not() -> st.SearchStrategy[float]:
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]))


SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2**70, max_value=2**70), st.sampled_from([0, -1, 2**31, 2**63, -2**63, 10**30]),
    _finite_or_not(),
    st.text(max_size=40),
    st.sampled_from(["", " ", "${", "${}", "${a.b}", "${recipes.run.name}", "${oc.env:HPCTL_FUZZ_UNSET}",
                     "${..x}", "${hydra:runtime.choices.recipes}", "${oc.env:}", "$(touch /tmp/x)", "`id`",
                     "{{ 7*7 }}", "\u202e\u0000", "\ud7ff\ue000", "a\nb", "'", '"', "%j", "yes", "no", "~",
                     "0x1F", "1_000", "1e999", ".nan", "-.inf", "2026-12-01", "12:30:00", "!!binary aGk="]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def _deep(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            out.append(prefix + (k,))
            out += _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.append(prefix + (i,))
            out += _paths(v, prefix + (i,))
    return out


def _parent(data: Any, path: tuple) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def structural(draw: st.DrawFn, text: str) -> str:
    """Parse, mutate one to three nodes (delete, rename, swap the type, deep nesting), dump."""
    data = yaml.safe_load(text)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(data, path), path[-1]
        how = draw(st.sampled_from(["delete", "rename", "value", "value", "deep", "add"]))
        if how == "delete":
            del parent[last]
        elif how == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = parent.pop(last)
        elif how == "deep":
            parent[last] = _deep(draw(st.integers(20, 120)))  # deeper trips PyYAML's dumper
        elif how == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(VALUES)
        else:
            parent[last] = draw(VALUES)
    return yaml.safe_dump(data, allow_unicode=draw(st.booleans()), sort_keys=False, width=10**6)


RAW_SNIPPETS = [
    "x: &a {b: 1}\ny: *a\n", "x: *missing\n", "x: !!python/object:os.system {}\n", "x: !custom 3\n",
    "<<: {run: {name: merged}}\n", "x: !!str\n", "x: !!int abc\n", "? [a, b]\n: 1\n", "x: [&a 1, *a, *a]\n",
    "%YAML 1.1\n---\n", "x: |\n  multi\n  line\n", "run: null\n", "trainer: []\n", "model: {optim: 7}\n",
    "\ufeffrun: {}\n", "x: '\\x00'\n", "x: \"\\udc80\"\n", "\t\n", "{\n", "...\n", "- a\n",
]


@st.composite
def textual(draw: st.DrawFn, text: str) -> bytes:
    """Raw edits: a snippet (anchors, aliases, tags, merge keys) spliced in at a line, or bytes."""
    lines = text.splitlines(keepends=True)
    at = draw(st.integers(0, len(lines)))
    how = draw(st.sampled_from(["snippet", "snippet", "replace-line", "bytes"]))
    if how == "bytes":
        blob = draw(st.binary(min_size=1, max_size=64))
        return "".join(lines[:at]).encode() + blob + "".join(lines[at:]).encode()
    if how == "replace-line" and lines:
        at = min(at, len(lines) - 1)
        indent = lines[at][:len(lines[at]) - len(lines[at].lstrip())]
        lines[at] = indent + draw(st.text(max_size=30)).replace("\r", "") + "\n"
        return "".join(lines).encode("utf-8", "surrogatepass")
    return ("".join(lines[:at]) + draw(st.sampled_from(RAW_SNIPPETS)) + "".join(lines[at:])).encode()


KEYS = sorted({".".join(map(str, p)) for p in _paths(yaml.safe_load(MINI_RECIPE))})
ROOT_KEYS = ["base_results_dir", "cluster_type", "env_vars.X", "container", "cluster.env.A", "cluster.nproc_per_node",
             "recipes.run.name", "recipes.trainer.max_steps", "cluster.time", "debug"]


def _value_text(value: Any) -> str:
    return json.dumps(value, allow_nan=True) if not isinstance(value, str) else value


@st.composite
def override(draw: st.DrawFn, hyperpod: bool) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40))
    key = draw(st.one_of(st.sampled_from(ROOT_KEYS if hyperpod else KEYS + ROOT_KEYS),
                         st.text(min_size=1, max_size=20)))
    if hyperpod and draw(st.booleans()):
        key = "recipes." + key
    prefix = draw(st.sampled_from(["", "", "+", "++", "~", "+++", "-"]))
    if prefix == "~" and draw(st.booleans()):
        return "~" + key
    if draw(st.integers(0, 5)) == 0:
        key += "." + str(draw(st.integers(-3, 1000)))
    value = draw(st.one_of(st.builds(_value_text, VALUES), st.sampled_from(
        ["[1, 2", "{a: b}", "[]", "{}", "null", "&a 1", "*a", "!!python/name:os.system", "1e999", "nan",
         "${recipes.run.name}", "${oc.env:HOME}", "'5'", "a=b=c", "=", ""])))
    return f"{prefix}{key}={value}"


# ---------------------------------------------------------------------------------------------
# running one example


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang(f"an example used more than {HANG_S} s of CPU")


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`hpctl.cli.main(argv)` in-process under a CPU-time bound: (exit code, stdout, stderr)."""
    from hpctl.cli import main
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_PROF, HANG_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(argv))
                code: Any = 0
            except SystemExit as e:
                code = e.code
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)
    return (code if isinstance(code, int) else 0 if code is None else 1), out.getvalue(), err.getvalue()


def check_properties(ws: Path, argv: list[str]) -> dict[str, Any] | None:
    """Run `hpctl <argv> --json -w ws`; assert the properties; return the JSON document on success.
    With HPCTL_FUZZ_LOG, a failure is appended to that file instead of raised."""
    if not LOG:
        return _check(ws, argv)
    COUNT[0] += 1
    if COUNT[0] % 25 == 0:  # the long run may be stopped at any time: keep its count on disk
        Path(f"{LOG}.{os.getpid()}.count").write_text(f"{COUNT[0]}\n")
    try:
        return _check(ws, argv)
    except Exception as e:  # noqa: BLE001 - the long run records every failure and goes on
        record_failure(ws, argv, e)
        return None


def record_failure(ws: Path, argv: list[str], error: BaseException) -> None:
    """Append one failing example (its arguments, error and the workspace's YAML) to HPCTL_FUZZ_LOG."""
    files = {p.relative_to(ws).as_posix(): p.read_bytes().decode("utf-8", "backslashreplace")[:50000]
             for p in sorted(ws.rglob("*.yaml")) if p.is_file()}
    with open(LOG, "a") as f:
        f.write(json.dumps({"argv": argv, "error": f"{type(error).__name__}: {error}"[:3000], "files": files}) + "\n")


def _check(ws: Path, argv: list[str]) -> dict[str, Any] | None:
    before = listing(ws)
    code, out, err = run_cli(*argv, "--json", "-w", str(ws))
    context = f"argv={argv!r}\nstderr={err[-2000:]!r}"
    assert code in (0, 1), context
    assert "Traceback" not in out + err and "internal error" not in out + err, context
    assert listing(ws) == before, f"the workspace changed\n{context}"
    if code == 1 and not out and any(a.startswith("-") and a not in ("--json", "-w", "--cluster") for a in argv):
        assert "Error: " in err, context  # click's own usage error: an override that looks like an option
        return None
    doc = json.loads(out)  # a JSON document either way: the result, or the located problems
    if code == 1:
        assert err.startswith("Error: "), context
        assert doc.get("error") and doc["problems"], context
        for problem in doc["problems"]:
            assert problem["origin"] or problem["key"], f"an unlocated problem {problem}\n{context}"
        return None
    return doc


@pytest.fixture(scope="module")
def scratch() -> Path:
    with tempfile.TemporaryDirectory(prefix="hpctl-fuzz-") as d:
        yield Path(d)


def workspace(root: Path, files: dict[str, str | bytes]) -> Path:
    """A fresh workspace for one example (removed by the next), base_results_dir absolute."""
    import shutil
    ws = root / "ws"
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir()
    write_files(ws, {**DEFAULT_FILES, "config.yaml": DEFAULT_FILES["config.yaml"].replace(
        "base_results_dir: results", f"base_results_dir: {root}/results"), **files})
    return ws


# ---------------------------------------------------------------------------------------------
# properties

RECIPE_NAMES = sorted(RECIPES)
CLUSTER_NAMES = sorted(CLUSTERS)


@FUZZ
@given(data=st.data(), name=st.sampled_from(RECIPE_NAMES), cluster=st.sampled_from(CLUSTER_NAMES),
       command=st.sampled_from(["plan", "validate"]))
def test_mutated_recipe(scratch: Path, data: st.DataObject, name: str, cluster: str, command: str) -> None:
    text = RECIPES[name]
    mutated = data.draw(st.one_of(structural(text).map(str.encode), textual(text)), label="recipe")
    ws = workspace(scratch, {"recipes/fuzz/target.yaml": mutated})
    check_properties(ws, [command, "target", "--cluster", cluster])


@FUZZ
@given(data=st.data(), cluster=st.sampled_from(CLUSTER_NAMES), command=st.sampled_from(["plan", "validate"]))
def test_mutated_cluster_and_general_config(scratch: Path, data: st.DataObject, cluster: str, command: str) -> None:
    which = data.draw(st.sampled_from(["cluster", "general"]), label="which")
    text = CLUSTERS[cluster] if which == "cluster" else DEFAULT_FILES["config.yaml"]
    mutated = data.draw(st.one_of(structural(text).map(str.encode), textual(text)), label=which)
    target = f"clusters/{cluster}.yaml" if which == "cluster" else "config.yaml"
    ws = workspace(scratch, {target: mutated})
    check_properties(ws, [command, "mini", "--cluster", cluster])


@FUZZ
@given(hyperpod=st.booleans(), data=st.data(), cluster=st.sampled_from(CLUSTER_NAMES))
def test_random_overrides_in_both_forms(scratch: Path, hyperpod: bool, data: st.DataObject, cluster: str) -> None:
    ovs = data.draw(st.lists(override(hyperpod), min_size=1, max_size=4), label="overrides")
    head = ["recipes=tiny/mini", f"cluster={cluster}"] if hyperpod else ["mini", "--cluster", cluster]
    ws = workspace(scratch, {})
    check_properties(ws, ["plan", *head, *ovs])


@FUZZ
@given(data=st.data(), name=st.sampled_from(["mini", "tiny_llama", "tiny_mistral", "tiny_mixtral",
                                              "tiny_llama_lora"]))
def test_validate_passes_means_the_trainer_accepts(scratch: Path, data: st.DataObject, name: str) -> None:
    from adapter.config import from_recipe
    from adapter.reader import ConfigError
    text = RECIPES[name]
    mutated = data.draw(structural(text), label="recipe")
    ovs = data.draw(st.lists(override(False), max_size=2), label="overrides")
    ws = workspace(scratch, {"recipes/fuzz/target.yaml": mutated})
    argv = ["validate", "target", "--cluster", "local", *ovs]
    doc = check_properties(ws, argv)
    if doc is not None:
        try:
            from_recipe(doc["spec"]["recipes"])
        except ConfigError as e:
            error = AssertionError(f"validate passed but the trainer refuses: {e}\n{mutated}\n{ovs}")
            if not LOG:
                raise error from None
            record_failure(ws, argv, error)


# ---------------------------------------------------------------------------------------------
# what the fuzzer found, kept as plain cases


@pytest.mark.parametrize("where,text", [
    ("recipe", MINI_RECIPE + "extra: " + "[" * 5000 + "]" * 5000 + "\n"),  # minutes in ruamel's scanner
    ("recipe", MINI_RECIPE + "extra: " + "[" * 300 + "]" * 300 + "\n"),  # RecursionError
    ("recipe", MINI_RECIPE.replace("  max_steps: 5\n", "  max_steps: " + "{a: " * 300 + "1" + "}" * 300 + "\n")),
    ("recipe", MINI_RECIPE + yaml.safe_dump({"extra": _deep(120)})),  # block style
    ("override", "trainer.max_steps=" + "[" * 500 + "]" * 500),
    ("override", "+x=" + "{a: " * 300 + "1" + "}" * 300),
])
def test_deep_nesting_is_a_located_error(scratch: Path, where: str, text: str) -> None:
    ws = workspace(scratch, {"recipes/tiny/mini.yaml": text} if where == "recipe" else {})
    code, _, err = run_cli("plan", "mini", "--cluster", "slurm", *([text] if where == "override" else []),
                           "-w", str(ws))
    assert code == 1 and "internal error" not in err, err
    assert (err.startswith("Error: recipes/tiny/mini.yaml:") and "nest more than 64 levels" in err) \
        if where == "recipe" else "wrong type" in err or "unknown key" in err or "override 1" in err, err


@pytest.mark.parametrize("snippet", ["x: !!int abc", "x: !!float .", "x: !!bool maybe", "x: !!int 0x"])
def test_a_value_that_does_not_fit_its_tag_is_a_located_error(scratch: Path, snippet: str) -> None:
    ws = workspace(scratch, {"recipes/tiny/mini.yaml": MINI_RECIPE + snippet + "\n"})
    code, _, err = run_cli("validate", "mini", "-w", str(ws))
    assert code == 1 and err.startswith("Error: recipes/tiny/mini.yaml:46:"), err
    assert "does not fit its YAML tag" in err and "internal error" not in err
    code, _, err = run_cli("validate", "mini", "-w", str(workspace(scratch, {})), "trainer.max_steps=" + snippet[3:])
    assert code == 1 and "override 1" in err and "internal error" not in err, err  # kept as text: a wrong type


def test_an_empty_key_is_named(scratch: Path) -> None:
    ws = workspace(scratch, {"config.yaml": DEFAULT_FILES["config.yaml"] + "? ''\n: {}\n"})
    assert check_properties(ws, ["validate", "mini"]) is None  # refused, with every problem located
