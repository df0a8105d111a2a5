"""compose(): workspace lookup, the two command-line forms, merge order, defaults and explain."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpctl.compose import compose, split_args
from hpctl.errors import HpctlError, Origin
from hpctl.workspace import BUILTIN, Workspace

from tests.helpers.workspace import MINI_RECIPE

SLURM_CLUSTER = """\
exclusive: True
mem: 0
container_mounts:
  - null
"""

HYPERPOD_CONFIG = """\
defaults:
  - _self_
  - cluster: slurm
  - recipes: tiny/mini
cluster_type: slurm
hydra:
  run:
    dir: .
base_results_dir: null
training_config: ${hydra:runtime.choices.recipes}
"""


def _compose(root: Path, *args: str, cluster: str | None = None, env: dict | None = None):
    return compose(list(args), cluster, Workspace(root), env=env or {})


def _error(root: Path, *args: str, cluster: str | None = None) -> HpctlError:
    with pytest.raises(HpctlError) as exc:
        _compose(root, *args, cluster=cluster)
    return exc.value


def test_split_args():
    assert split_args(["tiny/mini", "a=1"]) == ("tiny/mini", None, ["a=1"], False)
    assert split_args(["recipes=x/y", "cluster=slurm", "a=1"]) == ("x/y", "slurm", ["a=1"], True)
    assert split_args(["+a=1"]) == (None, None, ["+a=1"], True)
    assert split_args([]) == (None, None, [], True)


def test_three_layers_merge_under_their_mounts(tiny_workspace):
    ws = tiny_workspace()
    spec = _compose(ws, "tiny/mini")
    assert spec.recipe_name == "tiny/mini" and spec.cluster_name == "local" and spec.cluster_type == "local"
    assert spec.data["cluster"]["device_memory_gb"] == 16
    assert spec.data["recipes"]["trainer"]["max_steps"] == 5
    assert spec.data["env_vars"] == {"NCCL_DEBUG": "WARN"}
    assert spec.data["training_config"] == "tiny/mini"
    assert spec.origin("recipes.trainer.max_steps") == Origin("recipes/tiny/mini.yaml", 11, 14)
    assert spec.origin("cluster.device_memory_gb") == Origin("clusters/local.yaml", 5, 19)
    assert spec.origin("env_vars.NCCL_DEBUG") == Origin("config.yaml", 7, 15)
    assert set(spec.inputs) == {"config.yaml", "clusters/local.yaml", "recipes/tiny/mini.yaml"}
    assert all(d.startswith("sha256:") for d in spec.inputs.values())


def test_later_layers_win_and_keep_their_origin(tiny_workspace):
    ws = tiny_workspace({"config.yaml": "base_results_dir: /g\ndebug: false\nshared: general\n",
                         "clusters/local.yaml": "type: local\nshared: cluster\n"})
    spec = _compose(ws, "mini", "++shared=override")
    assert spec.data["shared"] == "override" and spec.data["cluster"]["shared"] == "cluster"


def test_hpctl_form_keys_are_relative_to_the_recipe(tiny_workspace):
    ws = tiny_workspace()
    spec = _compose(ws, "mini", "trainer.max_steps=7", "cluster.devices_per_node=2",
                    "base_results_dir=/r", "env_vars.NCCL_DEBUG=INFO", "recipes.model.optim.lr=0.5",
                    "+model.data.num_workers=2")
    assert spec.get("recipes.trainer.max_steps") == 7
    assert spec.get("cluster.devices_per_node") == 2
    assert spec.get("base_results_dir") == "/r" and spec.get("recipes.run.results_dir") == "/r/mini"
    assert spec.get("env_vars.NCCL_DEBUG") == "INFO"
    assert spec.get("recipes.model.optim.lr") == 0.5
    assert spec.get("recipes.model.data.num_workers") == 2
    assert spec.origin("recipes.trainer.max_steps") == Origin(override=1, text="trainer.max_steps=7")
    assert spec.origin("recipes.model.data.num_workers").override == 6


def test_hpctl_form_missing_key_names_the_recipe_path_and_hint(tiny_workspace):
    err = _error(tiny_workspace(), "mini", "trainer.max_step=7")
    [p] = err.problems
    assert p.key == "recipes.trainer.max_step" and "did you mean 'max_steps'?" in p.hint
    assert "+trainer.max_step=7" in p.hint and str(p.origin) == "override 1 (trainer.max_step=7)"


def test_hyperpod_form_keys_are_relative_to_the_root(tiny_workspace):
    ws = tiny_workspace({"cluster/slurm.yaml": SLURM_CLUSTER})
    spec = _compose(ws, "recipes=tiny/mini", "cluster=slurm", "cluster_type=slurm", "base_results_dir=/r",
                    "recipes.run.name=x", "recipes.model.data.train_dir=/d",
                    "+cluster.container_mounts.0=/fsx:/fsx")
    assert spec.cluster_name == "slurm" and spec.cluster_type == "slurm"
    assert spec.get("recipes.run.results_dir") == "/r/x"
    assert spec.get("recipes.model.data.train_dir") == "/d"
    assert spec.get("cluster.container_mounts") == ["/fsx:/fsx"]
    assert spec.origin("cluster.exclusive") == Origin("cluster/slurm.yaml", 1, 12)
    assert spec.origin("cluster_type") == Origin(override=1, text="cluster_type=slurm")
    assert [str(o) for o in spec.provenance["recipes.run.results_dir"]] == [
        "recipes/tiny/mini.yaml:3:16", "override 2 (base_results_dir=/r)", "override 3 (recipes.run.name=x)"]


def test_hyperpod_form_recipe_relative_key_is_read_as_the_recipes_with_a_note(tiny_workspace):
    """HyperPod's verl scripts pass `run.name=` at the root, which has no `run`: the recipe's key."""
    spec = _compose(tiny_workspace(), "recipes=tiny/mini", "trainer.max_steps=7")
    assert spec.get("recipes.trainer.max_steps") == 7
    assert spec.notes == ("trainer.max_steps=7: read as recipes.trainer.max_steps (the root has no 'trainer')",)


def test_hyperpod_form_key_in_neither_root_nor_recipe_is_refused(tiny_workspace):
    err = _error(tiny_workspace(), "recipes=tiny/mini", "trainer.max_stpes=7")
    [p] = err.problems
    assert p.message == "key 'trainer' does not exist" and p.key == "trainer.max_stpes"
    assert "+trainer.max_stpes=7" in p.hint


def test_hyperpod_form_without_a_recipe(tiny_workspace):
    err = _error(tiny_workspace(), "cluster=local", "a=1")
    assert "no recipe given" in err.render()


def test_cluster_option_wins_over_cluster_argument(tiny_workspace):
    ws = tiny_workspace({"cluster/slurm.yaml": SLURM_CLUSTER})
    assert _compose(ws, "recipes=tiny/mini", "cluster=slurm", cluster="local").cluster_name == "local"


def test_hyperpod_general_config_names_the_default_cluster_and_hydra_keys_are_dropped(tiny_workspace):
    ws = tiny_workspace({"config.yaml": HYPERPOD_CONFIG, "cluster/slurm.yaml": SLURM_CLUSTER})
    spec = _compose(ws, "mini")
    assert spec.cluster_name == "slurm" and spec.cluster_type == "slurm"
    assert "defaults" not in spec.data and "hydra" not in spec.data
    assert not any(p.startswith(("defaults", "hydra")) for p in spec.provenance)
    assert spec.get("base_results_dir") == str(ws / "results")
    assert spec.origin("base_results_dir") == Origin()  # the default, not config.yaml's null


def test_cluster_type_comes_from_the_cluster_files_type_key(tiny_workspace):
    ws = tiny_workspace({"clusters/mybox.yaml": "type: local\ndevices_per_node: 1\n"})
    spec = _compose(ws, "mini", cluster="mybox")
    assert spec.cluster_name == "mybox" and spec.cluster_type == "local"
    assert spec.origin("cluster_type") == Origin("clusters/mybox.yaml", 1, 7)


def test_both_cluster_directories_are_searched(tiny_workspace):
    ws = tiny_workspace({"cluster/hp.yaml": "type: slurm\n", "clusters/mine.yaml": "type: local\n"})
    known = Workspace(ws).clusters()
    assert known["hp"].display == "cluster/hp.yaml" and known["mine"].display == "clusters/mine.yaml"
    assert known["local"].display == "clusters/local.yaml"  # the workspace's shadows the built-in
    assert known["k8s"].display == f"{BUILTIN}/clusters/k8s.yaml"


def test_cluster_by_file_path(tiny_workspace, tmp_path):
    ws = tiny_workspace()
    path = tmp_path / "elsewhere.yaml"
    path.write_text("type: local\ndevices_per_node: 1\n")
    spec = _compose(ws, "mini", cluster=str(path))
    assert spec.cluster_name == "elsewhere" and spec.cluster_type == "local"


def test_unknown_cluster_lists_the_known_and_suggests(tiny_workspace):
    err = _error(tiny_workspace(), "mini", cluster="locl")
    [p] = err.problems
    assert p.message == "unknown cluster 'locl'" and p.hint == "did you mean 'local'?"
    assert "local" in p.expected and "slurm" in p.expected and "k8s" in p.expected


def test_recipe_by_path_basename_file_and_yaml_suffix(tiny_workspace, tmp_path):
    ws = tiny_workspace({"recipes/deep/er/other.yaml": MINI_RECIPE})
    w = Workspace(ws)
    assert w.recipe("tiny/mini").name == "tiny/mini"
    assert w.recipe("recipes/tiny/mini.yaml").name == "tiny/mini"
    assert w.recipe("mini").display == "recipes/tiny/mini.yaml"
    assert w.recipe("other").name == "deep/er/other"
    outside = tmp_path / "outside.yaml"
    outside.write_text(MINI_RECIPE)
    found = w.recipe(str(outside))
    assert found.path == outside and found.name == "outside"
    spec = _compose(ws, str(outside))
    assert spec.recipe_name == "outside" and spec.data["training_config"] == "outside"


def test_ambiguous_basename_lists_the_candidates(tiny_workspace):
    ws = tiny_workspace({"recipes/a/x.yaml": MINI_RECIPE, "recipes/b/x.yaml": MINI_RECIPE})
    err = _error(ws, "x")
    [p] = err.problems
    assert "ambiguous" in p.message and "a/x" in p.expected and "b/x" in p.expected
    assert _compose(ws, "a/x").recipe_name == "a/x"


def test_unknown_recipe_suggests_a_close_name(tiny_workspace):
    err = _error(tiny_workspace(), "tiny/mimi")
    [p] = err.problems
    assert p.message == "unknown recipe 'tiny/mimi'" and p.hint == "did you mean 'tiny/mini'?"
    err = _error(tiny_workspace(name="ws2"), "zzzzzz")
    assert "hpctl recipes list" in err.problems[0].hint


def test_builtin_fallback_for_every_layer(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    spec = _compose(empty, "tiny_llama")
    assert set(spec.inputs) == {f"{BUILTIN}/config.yaml", f"{BUILTIN}/clusters/local.yaml",
                                f"{BUILTIN}/recipes/tiny/tiny_llama.yaml"}
    assert spec.origin("recipes.run.name").file == f"{BUILTIN}/recipes/tiny/tiny_llama.yaml"
    assert spec.get("recipes.run.results_dir") == str(empty / "results" / spec.job_name)
    assert list(empty.iterdir()) == []


def test_results_dir_is_relative_to_the_workspace_not_the_cwd(tiny_workspace, tmp_path, monkeypatch):
    ws = tiny_workspace()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = _compose(ws, "mini")
    assert spec.get("base_results_dir") == str(ws / "results")
    assert spec.get("recipes.run.results_dir") == str(ws / "results" / "mini")
    assert spec.origin("base_results_dir") == Origin("config.yaml", 4, 19)


def test_exp_dir_defaults_to_results_dir(tiny_workspace):
    spec = _compose(tiny_workspace(), "mini", "base_results_dir=/r")
    assert spec.get("recipes.exp_manager.exp_dir") == "/r/mini"
    assert spec.get("recipes.exp_manager.checkpoint_dir") == "/r/mini/checkpoints"
    assert spec.provenance["recipes.exp_manager.exp_dir"][0] == Origin()


def test_explicit_exp_dir_is_kept(tiny_workspace):
    spec = _compose(tiny_workspace(), "mini", "exp_manager.exp_dir=/e")
    assert spec.get("recipes.exp_manager.exp_dir") == "/e" and spec.get("recipes.exp_manager.checkpoint_dir") == "/e/checkpoints"


def test_relative_results_dir_makes_every_derived_dir_absolute(tiny_workspace):
    """run.results_dir is made absolute against the workspace; exp_dir defaults to that same
    directory, so it (and the checkpoint dir under it) must be absolute too."""
    ws = tiny_workspace()
    spec = _compose(ws, "mini", "run.results_dir=out/mini")
    assert spec.get("recipes.run.results_dir") == str(ws / "out" / "mini")
    assert spec.get("recipes.exp_manager.exp_dir") == spec.get("recipes.run.results_dir")
    assert spec.get("recipes.exp_manager.checkpoint_dir") == str(ws / "out" / "mini" / "checkpoints")


def test_env_interpolation_in_a_workspace_file(tiny_workspace):
    ws = tiny_workspace({"config.yaml": "base_results_dir: ${oc.env:HPCTL_TEST_BASE,/default}\n"})
    assert _compose(ws, "mini", env={"HPCTL_TEST_BASE": "/from/env"}).get("recipes.run.results_dir") == "/from/env/mini"
    assert _compose(ws, "mini").get("recipes.run.results_dir") == "/default/mini"


def test_schema_errors_about_sections_point_into_the_file(tiny_workspace):
    from hpctl.validate import validate
    recipe = MINI_RECIPE.replace("    name: adamw\n", "") + "trainr:\n  max_steps: 5\n"
    spec = _compose(tiny_workspace({"recipes/tiny/mini.yaml": recipe}), "mini")
    with pytest.raises(HpctlError) as exc:
        validate(spec)
    by_key = {p.key: p for p in exc.value.problems}
    assert by_key["recipes.model.optim.name"].origin == Origin("recipes/tiny/mini.yaml", 34, 3)
    assert by_key["recipes.trainr"].origin == Origin("recipes/tiny/mini.yaml", 45, 1)
    assert by_key["recipes.trainr"].hint == "did you mean 'trainer'?"


def test_workspace_must_be_a_directory(tmp_path):
    with pytest.raises(HpctlError, match="is not a directory"):
        Workspace(tmp_path / "nope")


def test_hyperpod_v1_real_invocation(hyperpod_v1):
    args = ["recipes=training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain", "cluster=slurm", "cluster_type=slurm",
            "base_results_dir=/r", "recipes.run.name=x", "recipes.model.data.train_dir=/d",
            "+cluster.container_mounts.0=/fsx:/fsx"]
    spec = compose(args, None, Workspace(hyperpod_v1), env={})
    assert spec.get("recipes.run.results_dir") == "/r/x"
    assert spec.get("recipes.exp_manager.exp_dir") == "/r/x"
    assert spec.get("recipes.exp_manager.checkpoint_dir") == "/r/x/checkpoints/"
    assert spec.get("cluster.container_mounts") == ["/fsx:/fsx"]
    assert spec.get("training_config") == "training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain"
    assert spec.get("recipes.model.max_position_embeddings") == 8192
    assert spec.cluster_type == "slurm" and spec.inputs.keys() == {
        "config.yaml", "cluster/slurm.yaml", "recipes/training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain.yaml"}
    assert spec.origin("recipes.model.hidden_size").file.startswith("recipes/training/llama/")


def test_hyperpod_v1_real_invocation_through_the_cli(hyperpod_v1, run_cli):
    args = ["recipes=training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain", "cluster=slurm", "cluster_type=slurm",
            "base_results_dir=/r", "recipes.run.name=x", "recipes.model.data.train_dir=/d",
            "+cluster.container_mounts.0=/fsx:/fsx"]
    rc, out, err = run_cli("validate", "-w", hyperpod_v1, *args)
    assert rc == 0 and "valid: training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain on slurm" in out, err
    rc, out, err = run_cli("plan", "-w", hyperpod_v1, "--json", *args)
    plan = json.loads(out)
    assert rc == 0 and plan["job"] == "x" and plan["backend"] == "slurm"
    assert plan["summary"]["results_dir"] == "/r/x" and plan["spec"]["recipes"]["run"]["results_dir"] == "/r/x"
    assert plan["provenance"]["recipes.run.results_dir"][1:] == [
        {"kind": "override", "index": 2, "text": "base_results_dir=/r"},
        {"kind": "override", "index": 3, "text": "recipes.run.name=x"}]
    assert not (hyperpod_v1 / ".hpctl").exists()


def test_hyperpod_v1_default_name_results_dir(hyperpod_v1):
    spec = compose(["recipes=training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain", "base_results_dir=/r"],
                   None, Workspace(hyperpod_v1), env={})
    assert spec.cluster_name == "slurm"  # config.yaml's defaults list
    assert spec.get("recipes.run.results_dir") == "/r/llama-8b"


# --- hpctl explain ---------------------------------------------------------------------------

def test_explain_prints_value_and_origin_chain(tiny_workspace, run_cli):
    ws = tiny_workspace()
    rc, out, err = run_cli("explain", "-w", ws, "mini", "trainer.max_steps=9", "model.lr_decay_iters")
    assert (rc, err) == (0, "")
    assert out.splitlines() == ["recipes.model.lr_decay_iters = 9",
                                "  set at recipes/tiny/mini.yaml:33:19",
                                "  from   override 1 (trainer.max_steps=9)"]


def test_explain_a_chain_through_several_files(tiny_workspace, run_cli):
    ws = tiny_workspace()
    rc, out, _ = run_cli("explain", "-w", ws, "mini", "exp_manager.checkpoint_dir")
    assert rc == 0
    assert out.splitlines() == [
        f'recipes.exp_manager.checkpoint_dir = "{ws}/results/mini/checkpoints"',
        "  set at recipes/tiny/mini.yaml:15:19",
        "  from   default",
        "  from   recipes/tiny/mini.yaml:3:16",
        "  from   config.yaml:4:19",
        "  from   recipes/tiny/mini.yaml:2:9"]


def test_explain_general_and_absolute_keys(tiny_workspace, run_cli):
    ws = tiny_workspace()
    rc, out, _ = run_cli("explain", "-w", ws, "mini", "env_vars.NCCL_DEBUG")
    assert rc == 0 and out.splitlines() == ['env_vars.NCCL_DEBUG = "WARN"', "  set at config.yaml:7:15"]
    rc, out, _ = run_cli("explain", "-w", ws, "mini", "recipes.trainer.devices")
    assert rc == 0 and out.splitlines()[0] == "recipes.trainer.devices = 1"


def test_explain_hyperpod_form(tiny_workspace, run_cli):
    ws = tiny_workspace()
    rc, out, _ = run_cli("explain", "-w", ws, "recipes=tiny/mini", "recipes.run.name=z", "recipes.run.results_dir")
    assert rc == 0
    assert out.splitlines()[0] == f'recipes.run.results_dir = "{ws}/results/z"'
    assert "  from   override 1 (recipes.run.name=z)" in out.splitlines()


def test_explain_json(tiny_workspace, run_cli):
    ws = tiny_workspace()
    rc, out, _ = run_cli("explain", "-w", ws, "--json", "mini", "+trainer.seed=3", "trainer.seed")
    doc = json.loads(out)
    assert rc == 0 and doc == {"format_version": 1, "key": "recipes.trainer.seed", "value": 3,
                               "origins": [{"kind": "override", "index": 1, "text": "+trainer.seed=3"}]}


def test_explain_redacts_secrets(tiny_workspace, run_cli):
    ws = tiny_workspace()
    rc, out, _ = run_cli("explain", "-w", ws, "mini", "+model.hf_access_token=hf_abc123", "model.hf_access_token")
    assert rc == 0 and "hf_abc123" not in out and "(sensitive)" in out


def test_explain_unknown_key(tiny_workspace, run_cli):
    ws = tiny_workspace()
    rc, out, err = run_cli("explain", "-w", ws, "mini", "trainer.max_stepz")
    assert rc == 1 and out == ""
    assert "key 'trainer.max_stepz' is not in the spec" in err and "did you mean 'max_steps'?" in err


def test_secret_override_never_reaches_plan_or_validate_json(tiny_workspace, run_cli):
    ws = tiny_workspace()
    for command in ("validate", "plan"):
        rc, out, err = run_cli(command, "-w", ws, "--json", "mini", "+model.hf_access_token=hf_abc123")
        assert rc == 0, err
        doc = json.loads(out)
        assert "hf_abc123" not in out + err
        assert doc["provenance"]["recipes.model.hf_access_token"] == [
            {"kind": "override", "index": 1, "text": "+model.hf_access_token=(sensitive)"}]
