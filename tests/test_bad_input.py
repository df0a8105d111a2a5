"""A corpus of bad inputs, each run through the real CLI (`hpctl validate` and `hpctl plan`).

Every case must give exit code 1, one `Error:` message on stderr whose first line names the file
and line (where the input has them) and the key, nothing on stdout, no traceback anywhere, and no
file written in the workspace (no .hpctl/, no results/).
"""
from __future__ import annotations

import os
import pty
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.workspace import GENERAL_CONFIG, LOCAL_CLUSTER, MINI_RECIPE, listing

RECIPE = "recipes/tiny/mini.yaml"
CLUSTER = "clusters/local.yaml"


def _recipe(old: str, new: str) -> str:
    assert old in MINI_RECIPE, old
    return MINI_RECIPE.replace(old, new, 1)


def _bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


@dataclass
class Case:
    id: str
    args: list[str]  # after the command name; the workspace is passed with -w
    needles: list[str]  # each must appear in the first line of the error
    files: dict[str, str | bytes | None] = field(default_factory=dict)
    sparse: dict[str, int] = field(default_factory=dict)  # file -> size, made with truncate
    env: dict[str, str] = field(default_factory=dict)


CORPUS = [
    # --- files that are not YAML mappings ---------------------------------------------------
    Case("yaml-unclosed-flow-list", ["mini"], [f"{RECIPE}:38:", "YAML syntax error"],
         {RECIPE: _recipe("    betas:\n    - 0.9\n    - 0.95\n", "    betas: [0.9, 0.95\n    x: 1\n")}),
    Case("yaml-bad-indentation", ["mini"], [f"{RECIPE}:8:", "YAML syntax error"],
         {RECIPE: _recipe("  num_nodes: 1\n", " num_nodes: 1\n")}),
    Case("yaml-tab-indentation", ["mini"], [f"{RECIPE}:11:", "YAML syntax error"],
         {RECIPE: _recipe("  max_steps: 5\n", "\tmax_steps: 5\n")}),
    Case("yaml-duplicate-key", ["mini"], [f"{RECIPE}:12:3", "duplicate key", "max_steps"],
         {RECIPE: _recipe("  log_every_n_steps: 1\n", "  max_steps: 6\n")}),
    Case("yaml-unclosed-quote", ["mini"], [RECIPE, "YAML syntax error"],
         {RECIPE: _recipe('  time_limit: "0-00:10:00"\n', '  time_limit: "0-00:10:00\n')}),
    Case("yaml-two-documents", ["mini"], [f"{RECIPE}:", "YAML syntax error"],
         {RECIPE: MINI_RECIPE + "---\nrun: {}\n"}),
    Case("yaml-error-in-general-config", ["mini"], ["config.yaml:2:", "YAML syntax error"],
         {"config.yaml": "cluster_type: local\ndebug: a: b\n"}),
    Case("yaml-error-in-cluster", ["mini"], [f"{CLUSTER}:2:", "YAML syntax error"],
         {CLUSTER: "type: local\n devices_per_node: 1\n"}),
    Case("empty-recipe", ["mini"], [RECIPE, "empty"], {RECIPE: ""}),
    Case("comment-only-cluster", ["mini"], [CLUSTER, "empty"], {CLUSTER: "# nothing here\n"}),
    Case("recipe-is-a-list", ["mini"], [f"{RECIPE}:1:1", "not a mapping"], {RECIPE: "- run\n- trainer\n"}),
    Case("general-config-is-a-scalar", ["mini"], ["config.yaml:1:1", "not a mapping"],
         {"config.yaml": "just some text\n"}),
    Case("binary-garbage-recipe", ["mini"], [RECIPE, "binary"], {RECIPE: bytes(range(256)) * 16}),
    Case("nul-bytes-in-cluster", ["mini"], [CLUSTER, "binary"], {CLUSTER: LOCAL_CLUSTER.encode() + b"\x00\x00"}),
    Case("invalid-utf8", ["mini"], [f"{RECIPE}:3", "UTF-8"],
         {RECIPE: MINI_RECIPE.encode().replace(b"results_dir", b"results_d\xefr", 1)}),
    Case("50MB-recipe", ["mini"], [RECIPE, "too large"], sparse={RECIPE: 50 * 1024 * 1024}),
    Case("yaml-alias-bomb", ["mini"], [RECIPE, "more than"], {RECIPE: _bomb()}),
    # --- schema: wrong types, unknown keys, missing keys, bad values ------------------------
    Case("wrong-type-in-recipe", ["mini"], [f"{RECIPE}:12:", "recipes.trainer.log_every_n_steps", "wrong type"],
         {RECIPE: _recipe("  log_every_n_steps: 1\n", "  log_every_n_steps: often\n")}),
    Case("unknown-key-in-recipe", ["mini"], [f"{RECIPE}:12:", "recipes.trainer.log_every_n_step", "unknown key"],
         {RECIPE: _recipe("  log_every_n_steps: 1\n", "  log_every_n_step: 1\n")}),
    Case("missing-required-key", ["mini"], [f"{RECIPE}:34:", "recipes.model.optim.name", "missing required key"],
         {RECIPE: _recipe("    name: adamw\n", "")}),
    Case("enum-value-not-allowed", ["mini"], [f"{RECIPE}:9:", "recipes.trainer.accelerator", "not allowed"],
         {RECIPE: _recipe("  accelerator: cpu\n", "  accelerator: tpu\n")}),
    Case("value-out-of-range", ["mini"], [f"{RECIPE}:7:", "recipes.trainer.devices"],
         {RECIPE: _recipe("  devices: 1\n", "  devices: 0\n")}),
    Case("wrong-type-in-cluster", ["mini"], [f"{CLUSTER}:4:", "cluster.devices_per_node", "wrong type"],
         {CLUSTER: LOCAL_CLUSTER.replace("devices_per_node: 1", "devices_per_node: two")}),
    Case("unknown-key-in-cluster", ["mini"], [f"{CLUSTER}:7:", "cluster.nproc", "unknown key"],
         {CLUSTER: LOCAL_CLUSTER + "nproc: 2\n"}),
    Case("wrong-type-in-general-config", ["mini"], ["config.yaml:2:", "debug", "wrong type"],
         {"config.yaml": GENERAL_CONFIG.replace("debug: false", "debug: maybe")}),
    Case("section-replaced-by-a-scalar", ["mini"], [f"{RECIPE}:43:9", "recipes.model.data", "wrong type"],
         {RECIPE: _recipe("  data:\n    train_dir: null\n    use_synthetic_data: true\n", "  data: 5\n")}),
    Case("unknown-cluster-type", ["mini", "cluster_type=bcm"], ["override 1", "cluster_type", "not allowed"]),
    # HyperPod's `cluster=NAME` after hpctl's positional recipe replaces the cluster mapping with a string
    Case("cluster-replaced-by-a-name", ["mini", "cluster=slurm"],
         ["override 1 (cluster=slurm)", "cluster", "wrong type"]),
    Case("section-set-to-null-by-override", ["mini", "exp_manager=null"],
         ["override 1", "recipes.exp_manager", "wrong type"]),
    Case("wrong-type-by-override", ["mini", "trainer.log_every_n_steps=abc"],
         ["override 1 (trainer.log_every_n_steps=abc)", "recipes.trainer.log_every_n_steps", "wrong type"]),
    # --- overrides ----------------------------------------------------------------------------
    Case("override-without-equals", ["mini", "trainer.max_steps"], ["override 1", "has no '='"]),
    Case("override-malformed-key", ["mini", "trainer..max_steps=1"], ["override 1", "malformed key"]),
    Case("override-empty-key", ["mini", "=1"], ["override 1", "malformed key"]),
    Case("override-missing-key-without-plus", ["mini", "trainer.max_steps=6", "trainer.max_step=5"],
         ["override 2 (trainer.max_step=5)", "recipes.trainer.max_step", "does not exist"]),
    Case("override-add-existing-key", ["mini", "+trainer.max_steps=5"],
         ["override 1", "recipes.trainer.max_steps", "already exists"]),
    Case("override-list-index-past-end", ["mini", "+model.optim.betas.5=0.1"],
         ["override 1", "recipes.model.optim.betas.5", "past the end"]),
    Case("override-list-index-not-a-number", ["mini", "model.optim.betas.first=0.1"],
         ["override 1", "recipes.model.optim.betas.first", "is a list"]),
    Case("override-through-a-scalar", ["mini", "+trainer.max_steps.x=1"],
         ["override 1", "recipes.trainer.max_steps.x", "not a section"]),
    Case("override-delete-missing", ["mini", "~trainer.nope"], ["override 1", "recipes.trainer.nope", "does not exist"]),
    # HyperPod's form reads a root key the root lacks as the recipe's (test_compose); one in neither is refused
    Case("override-hyperpod-form-in-neither", ["recipes=tiny/mini", "trainer.max_stpes=5"],
         ["override 1", "trainer.max_stpes", "does not exist"]),
    # --- names ----------------------------------------------------------------------------------
    Case("unknown-recipe", ["tiny/mimi"], ["recipe", "unknown recipe 'tiny/mimi'"]),
    Case("unknown-cluster", ["mini", "--cluster", "locl"], ["cluster", "unknown cluster 'locl'"]),
    Case("unknown-cluster-hyperpod-form", ["recipes=tiny/mini", "cluster=slurmm"], ["unknown cluster 'slurmm'"]),
    Case("ambiguous-recipe-basename", ["mini"], ["recipe", "ambiguous"], {"recipes/other/mini.yaml": MINI_RECIPE}),
    Case("recipe-is-a-directory", ["tiny"], ["unknown recipe 'tiny'"]),
    Case("no-recipe", ["cluster=local"], ["no recipe given"]),
    Case("no-arguments", [], ["no recipe given"]),
    # --- interpolation -------------------------------------------------------------------------
    Case("interpolation-cycle", ["mini"], [f"{RECIPE}:24:", "recipes.model.max_context_width", "cycle"],
         {RECIPE: _recipe("  max_context_width: 32\n", "  max_context_width: ${.max_position_embeddings}\n")}),
    Case("interpolation-missing-ref", ["mini"], [f"{RECIPE}:33:", "recipes.model.lr_decay_iters", "does not exist"],
         {RECIPE: _recipe("${recipes.trainer.max_steps}", "${recipes.trainer.max_step}")}),
    Case("interpolation-unset-env", ["mini"], [f"{RECIPE}:44:", "HPCTL_SURELY_UNSET", "not set"],
         {RECIPE: _recipe("    train_dir: null\n", "    train_dir: ${oc.env:HPCTL_SURELY_UNSET}\n")}),
    Case("interpolation-unknown-resolver", ["mini"], [f"{RECIPE}:44:", "unknown resolver"],
         {RECIPE: _recipe("    train_dir: null\n", "    train_dir: ${oc.envv:HOME}\n")}),
    Case("interpolation-unclosed", ["mini"], [f"{RECIPE}:44:", "unclosed"],
         {RECIPE: _recipe("    train_dir: null\n", "    train_dir: ${recipes.run.name\n")}),
    Case("interpolation-cycle-by-override", ["mini", "+model.a=${.b}", "+model.b=${.a}"],
         ["override 1", "cycle"]),
    # --- pre-flight checks ---------------------------------------------------------------------
    Case("tensor-parallel-does-not-divide-heads", ["mini", "model.tensor_model_parallel_degree=3"],
         ["override 1", "recipes.model.tensor_model_parallel_degree", "[trainer]", "does not divide"]),
    Case("sequence-longer-than-positions", ["mini", "model.max_position_embeddings=16"],
         [f"{RECIPE}:24:", "recipes.model.max_context_width", "[trainer]", "exceeds"]),
    # --- what the trainer would refuse at start: refused by the plan, at the recipe's line -------
    Case("trainer-val-check-interval-zero", ["mini"],
         [f"{RECIPE}:", "recipes.trainer.val_check_interval", "[trainer]", "must be >= 1"],
         {RECIPE: _recipe("  max_steps: 5\n", "  max_steps: 5\n  val_check_interval: 0\n")}),
    Case("trainer-fp16", ["mini", "trainer.precision=16"], ["override 1", "recipes.trainer.precision", "value not allowed"]),
    Case("trainer-min-lr-above-lr", ["mini", "+model.optim.sched.min_lr=1.0"],
         ["override 1", "recipes.model.optim.sched.min_lr", "[trainer]", "above"]),
    # --- non-finite numbers ------------------------------------------------------------------
    Case("nan-learning-rate", ["mini"], [f"{RECIPE}:36:", "recipes.model.optim.lr", "finite"],
         {RECIPE: _recipe("    lr: 1e-3\n", "    lr: .nan\n")}),
    Case("inf-by-override", ["mini", "model.optim.lr=.inf"], ["override 1", "recipes.model.optim.lr", "finite"]),
    Case("nan-in-the-cluster", ["mini"], [f"{CLUSTER}:", "finite"],
         {CLUSTER: LOCAL_CLUSTER.replace("device_memory_gb: 16", "device_memory_gb: .nan")}),
    # --- architecture arithmetic -----------------------------------------------------------------
    Case("kv-heads-do-not-divide-heads", ["mini", "model.num_key_value_heads=3"],
         ["override 1", "recipes.model.num_key_value_heads", "[trainer]", "does not divide num_attention_heads"]),
    Case("hidden-not-divisible-by-heads", ["mini", "model.hidden_size=30"],
         ["override 1", "recipes.model.hidden_size", "[trainer]", "not divisible by num_attention_heads"]),
    Case("odd-head-dim", ["mini", "+model.head_dim=7"], ["override 1", "recipes.model.head_dim", "[trainer]", "odd"]),
    # --- pathological documents --------------------------------------------------------------
    Case("deeply-nested-recipe", ["mini"], [RECIPE, "nest more than 64 levels"],
         {RECIPE: MINI_RECIPE + "deep: " + "[" * 5000 + "]" * 5000 + "\n"}),
    Case("deeply-nested-override", ["mini", "+model.deep=" + "[" * 5000 + "]" * 5000], ["override 1", "nest more than 64 levels"]),
    Case("memory-over-the-device", ["mini", "model.hidden_size=65536"], ["[memory]", "more memory than the device has"]),
]
assert len(CORPUS) >= 30 and len({c.id for c in CORPUS}) == len(CORPUS)


def _prepare(case: Case, tiny_workspace) -> Path:
    ws = tiny_workspace(case.files)
    for rel, size in case.sparse.items():
        (ws / rel).unlink()
        subprocess.run(["truncate", "-s", str(size), str(ws / rel)], check=True)
    return ws


def _assert_one_clear_error(case: Case, rc: int, out: str, err: str) -> None:
    assert rc == 1, (rc, out, err)
    assert "Traceback" not in out + err
    assert "internal error" not in err, err
    assert out == ""
    assert err.startswith("Error: ") and err.count("Error:") == 1, err
    first = err.splitlines()[0]
    for needle in case.needles:
        assert needle in first, f"{needle!r} not in {first!r}"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["validate", "plan"])
@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_bad_input_in_process(case, command, tiny_workspace, run_cli, monkeypatch):
    ws = _prepare(case, tiny_workspace)
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HPCTL_SURELY_UNSET", raising=False)
    monkeypatch.chdir(ws)
    before = listing(ws)
    rc, out, err = run_cli(command, "-w", ws, *case.args)
    _assert_one_clear_error(case, rc, out, err)
    assert listing(ws) == before
    assert not (ws / ".hpctl").exists() and not (ws / "results").exists()


def test_the_base_workspace_is_valid(tiny_workspace, run_cli):
    """The control: every case above differs from this workspace by the one fault it injects."""
    ws = tiny_workspace()
    before = listing(ws)
    for command in ("validate", "plan"):
        rc, out, err = run_cli(command, "-w", ws, "mini")
        assert rc == 0 and "Error" not in err, err
        assert "[memory] memory estimate" in out if command == "validate" else "mini: create" in out
    assert listing(ws) == before


def test_workspace_that_is_not_a_directory(tmp_path, run_cli):
    rc, out, err = run_cli("validate", "-w", tmp_path / "nope", "mini")
    assert rc == 1 and "is not a directory" in err and "Traceback" not in err and out == ""
    assert list(tmp_path.iterdir()) == []


SUBPROCESS_CASES = ["yaml-duplicate-key", "binary-garbage-recipe", "50MB-recipe", "unknown-key-in-recipe",
                    "override-missing-key-without-plus", "unknown-cluster", "interpolation-cycle"]


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CORPUS if c.id in SUBPROCESS_CASES], ids=lambda c: c.id)
def test_bad_input_through_the_console_script(case, tiny_workspace, hpctl_bin):
    """The installed `hpctl` script, in a fresh process: the no-traceback path end to end."""
    ws = _prepare(case, tiny_workspace)
    before = listing(ws)
    env = {k: v for k, v in os.environ.items() if k != "HPCTL_SURELY_UNSET"}
    for command in ("validate", "plan"):
        proc = subprocess.run([str(hpctl_bin), command, *case.args], cwd=ws, env=env,
                              capture_output=True, text=True, timeout=60)
        _assert_one_clear_error(case, proc.returncode, proc.stdout, proc.stderr)
    assert listing(ws) == before and not (ws / ".hpctl").exists()


def _read_pty(fd: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child side is closed and drained
            break
        if not data:
            break
        chunks.append(data)
    return re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode(errors="replace"))


@pytest.mark.slow
def test_error_on_a_terminal_shows_brackets_literally(tiny_workspace, hpctl_bin):
    """On a terminal the error is printed with rich; text from the input is not markup."""
    ws = tiny_workspace()
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([str(hpctl_bin), "explain", "mini", "[/x]", "run.name"], cwd=ws,
                              stdout=subprocess.PIPE, stderr=slave, timeout=60)
        os.close(slave)
        err = _read_pty(master)
    finally:
        os.close(master)
    assert proc.returncode == 1 and proc.stdout == b""
    assert "Traceback" not in err
    assert "Error: override 1 ([/x]): override '[/x]' has no '='" in err


def test_one_refusal_per_root_cause(tiny_workspace, run_cli):
    """mini's model.precision is `${recipes.trainer.precision}`: a bad trainer.precision, from the
    recipe or an override, is reported once, at trainer.precision, not again at its copy. A value
    given to the copy itself is its own cause and reported too."""
    ws = tiny_workspace({RECIPE: _recipe("  precision: fp32\n", "  precision: fp16\n")})
    rc, _, err = run_cli("validate", "-w", ws, "mini")
    assert rc == 1 and err.count("value not allowed") == 1, err
    assert "recipes.trainer.precision" in err and "recipes.model.precision" not in err
    for overrides, keys in ((["trainer.precision=bf17"], ["trainer"]),
                            (["trainer.precision=bf17", "model.precision=bf17"], ["model", "trainer"])):
        rc, _, err = run_cli("validate", "-w", ws, "mini", *overrides)
        assert rc == 1 and err.count("value not allowed") == len(keys), err
        assert all(f"recipes.{k}.precision" in err for k in keys), err
