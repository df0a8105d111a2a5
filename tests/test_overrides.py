"""Command-line overrides in Hydra's grammar: set, +add, ++force, ~delete, list indices, YAML types."""
from __future__ import annotations

import copy

import pytest

from hpctl import overrides
from hpctl.errors import HpctlError, Origin
from hpctl.overrides import ADD, DELETE, FORCE, SET


def _root() -> dict:
    return {
        "trainer": {"max_steps": 10, "devices": 2},
        "cluster": {"container_mounts": [None], "srun_args": ["--a", "--b"], "env": None},
        "model": {"optim": {"lr": 0.001}, "peft": {"peft_type": None}},
    }


def _origins() -> dict[str, Origin]:
    return {"trainer.max_steps": Origin("r.yaml", 2, 14), "cluster.srun_args.0": Origin("c.yaml", 3, 5),
            "cluster.srun_args.1": Origin("c.yaml", 4, 5)}


def _apply(*texts: str) -> tuple[dict, dict[str, Origin]]:
    root, origins = _root(), _origins()
    for i, text in enumerate(texts, start=1):
        overrides.apply(root, overrides.parse(text, i), origins)
    return root, origins


def _refused(*texts: str) -> HpctlError:
    with pytest.raises(HpctlError) as exc:
        _apply(*texts)
    return exc.value


@pytest.mark.parametrize("text, kind, path, value, has_value", [
    ("a.b=1", SET, "a.b", 1, True),
    ("+a.b=x", ADD, "a.b", "x", True),
    ("++a.b=1.5", FORCE, "a.b", 1.5, True),
    ("~a.b", DELETE, "a.b", None, False),
    ("~a.b=3", DELETE, "a.b", 3, True),
    ("a.list.0=/fsx:/fsx", SET, "a.list.0", "/fsx:/fsx", True),
    ("a=", SET, "a", "", True),
    ("a-b.c_d=x=y", SET, "a-b.c_d", "x=y", True),
])
def test_parse(text, kind, path, value, has_value):
    ov = overrides.parse(text, 3)
    assert (ov.kind, ov.path, ov.value, ov.has_value, ov.index, ov.text) == (kind, path, value, has_value, 3, text)
    assert ov.origin == Origin(override=3, text=text)
    assert str(ov.origin) == f"override 3 ({text})"


@pytest.mark.parametrize("raw, value", [
    ("5", 5), ("5.0", 5.0), ("true", True), ("null", None), ("[1,2]", [1, 2]), ("{a: 1}", {"a": 1}),
    ("'quoted'", "quoted"), ("'5'", "5"), ("1e-5", 1e-5), ("text with spaces", "text with spaces"),
])
def test_values_are_yaml_typed(raw, value):
    root, _ = _apply(f"trainer.max_steps={raw}")
    assert root["trainer"]["max_steps"] == value
    assert type(root["trainer"]["max_steps"]) is type(value)


@pytest.mark.parametrize("text, needle", [
    ("trainer.max_steps", "has no '='"),
    ("+trainer.x", "has no '='"),
    ("=5", "malformed key"),
    ("trainer..max_steps=1", "malformed key"),
    ("trainer.max_steps.=1", "malformed key"),
    (".trainer=1", "malformed key"),
    ("trainer max_steps=1", "malformed key"),
    ("trainer[0]=1", "malformed key"),
    ("+++a=1", "malformed key"),
    ("~~a", "malformed key"),
    ("${a}=1", "malformed key"),
])
def test_malformed_overrides(text, needle):
    with pytest.raises(HpctlError) as exc:
        overrides.parse(text, 2)
    [p] = exc.value.problems
    assert needle in p.message and p.origin == Origin(override=2, text=text)
    assert p.expected


def test_set_existing_key_records_override_origin():
    root, origins = _apply("trainer.max_steps=5")
    assert root["trainer"]["max_steps"] == 5
    assert origins["trainer.max_steps"] == Origin(override=1, text="trainer.max_steps=5")
    assert root["trainer"]["devices"] == 2


def test_set_missing_key_is_refused_with_did_you_mean_and_plus_hint():
    err = _refused("trainer.max_step=5")
    [p] = err.problems
    assert "does not exist" in p.message and p.key == "trainer.max_step"
    assert "did you mean 'max_steps'?" in p.hint
    assert "+trainer.max_step=5" in p.hint


def test_set_under_missing_section_names_the_first_missing_part():
    err = _refused("trainr.max_steps=5")
    assert "'trainr'" in err.problems[0].message
    assert "did you mean 'trainer'?" in err.problems[0].hint


def test_add_creates_new_keys_and_sections():
    root, origins = _apply("+model.data.train_dir=/d", "+trainer.extra={a: [1, 2]}")
    assert root["model"]["data"] == {"train_dir": "/d"}
    assert root["trainer"]["extra"] == {"a": [1, 2]}
    o2 = Origin(override=2, text="+trainer.extra={a: [1, 2]}")
    assert origins["trainer.extra"] == origins["trainer.extra.a"] == origins["trainer.extra.a.1"] == o2
    assert origins["model.data.train_dir"].override == 1


def test_add_over_null_is_allowed():
    root, _ = _apply("+model.peft.peft_type=lora", "+cluster.env.X=1")
    assert root["model"]["peft"]["peft_type"] == "lora"
    assert root["cluster"]["env"] == {"X": 1}


def test_add_over_a_value_is_refused_with_a_hint():
    err = _refused("+trainer.max_steps=3")
    [p] = err.problems
    assert "already exists" in p.message and "10" in p.message
    assert "trainer.max_steps=3" in p.hint and "++trainer.max_steps=3" in p.hint


def test_force_adds_or_replaces():
    root, origins = _apply("++trainer.max_steps=3", "++trainer.new=1", "++x.y.z=2")
    assert root["trainer"]["max_steps"] == 3 and root["trainer"]["new"] == 1 and root["x"] == {"y": {"z": 2}}
    assert origins["x.y.z"].override == 3


def test_delete():
    root, origins = _apply("~trainer.max_steps")
    assert "max_steps" not in root["trainer"] and "trainer.max_steps" not in origins


def test_delete_with_matching_value_only():
    root, _ = _apply("~trainer.max_steps=10")
    assert "max_steps" not in root["trainer"]
    err = _refused("~trainer.max_steps=11")
    assert "its value is 10, not 11" in err.problems[0].message


def test_delete_missing_key_is_refused():
    err = _refused("~trainer.max_step")
    assert "does not exist" in err.problems[0].message and "max_steps" in err.problems[0].hint


def test_delete_a_list_item_renumbers_origins():
    root, origins = _apply("~cluster.srun_args.0")
    assert root["cluster"]["srun_args"] == ["--b"]
    assert origins["cluster.srun_args.0"] == Origin("c.yaml", 4, 5)
    assert "cluster.srun_args.1" not in origins


def test_delete_then_add_again():
    root, origins = _apply("~trainer.max_steps", "+trainer.max_steps=1")
    assert root["trainer"]["max_steps"] == 1 and origins["trainer.max_steps"].override == 2


def test_list_index_set():
    root, origins = _apply("cluster.srun_args.1=--c")
    assert root["cluster"]["srun_args"] == ["--a", "--c"]
    assert origins["cluster.srun_args.1"].override == 1 and origins["cluster.srun_args.0"].file == "c.yaml"


def test_list_append_at_length_with_plus():
    root, origins = _apply("+cluster.srun_args.2=--c")
    assert root["cluster"]["srun_args"] == ["--a", "--b", "--c"]
    assert origins["cluster.srun_args.2"].override == 1


def test_list_append_without_plus_is_refused():
    err = _refused("cluster.srun_args.2=--c")
    assert "+cluster.srun_args.2=--c" in err.problems[0].hint


def test_list_index_past_the_end_is_refused():
    err = _refused("+cluster.srun_args.5=x")
    [p] = err.problems
    assert "past the end" in p.message and p.expected == "an index 0..2"


def test_list_item_that_is_null_can_be_filled_with_plus():
    """HyperPod's cluster/slurm.yaml has `container_mounts: [null]` and its docs say +...0=/fsx:/fsx."""
    root, _ = _apply("+cluster.container_mounts.0=/fsx:/fsx")
    assert root["cluster"]["container_mounts"] == ["/fsx:/fsx"]


def test_list_needs_a_numeric_index():
    err = _refused("cluster.srun_args.first=x")
    assert "is a list" in err.problems[0].message


def test_cannot_walk_through_a_scalar():
    err = _refused("+trainer.max_steps.x=1")
    assert "is a int, not a section" in err.problems[0].message


def test_replacing_a_section_forgets_the_origins_below_it():
    root, origins = _apply("cluster.srun_args=[--z]")
    assert root["cluster"]["srun_args"] == ["--z"]
    assert origins["cluster.srun_args.0"].override == 1 and "cluster.srun_args.1" not in origins


def test_override_values_are_copied():
    ov = overrides.parse("+a={b: [1]}", 1)
    root: dict = {}
    overrides.apply(root, ov, {})
    root["a"]["b"].append(2)
    assert ov.value == {"b": [1]}


def test_apply_leaves_the_root_untouched_on_error():
    root, origins = _root(), _origins()
    before = copy.deepcopy(root)
    with pytest.raises(HpctlError):
        overrides.apply(root, overrides.parse("trainer.nope.deeper=1", 1), origins)
    assert root == before


def test_secret_values_never_appear_in_origins_or_messages():
    ov = overrides.parse("+model.hf_access_token=hf_secret123", 4)
    assert ov.value == "hf_secret123"
    assert ov.text == "+model.hf_access_token=(sensitive)"
    assert str(ov.origin) == "override 4 (+model.hf_access_token=(sensitive))"
    root = {"git": {"token": "ghp_fromfile"}}
    for text in ("+git.token=ghp_typed", "~git.token=ghp_typed"):
        with pytest.raises(HpctlError) as exc:
            overrides.apply(root, overrides.parse(text, 1), {})
        assert "ghp_" not in exc.value.render()


def test_a_secret_inside_a_mapping_value_is_never_quoted():
    """`+env_vars={WANDB_API_KEY: k3y}` names no sensitive key itself, but its value holds one:
    messages and provenance show the override without the value."""
    from hpctl.overrides import parse
    ov = parse("+env_vars={WANDB_API_KEY: k3y-value}", 1)
    assert ov.value == {"WANDB_API_KEY": "k3y-value"}
    assert "k3y-value" not in ov.text and "k3y-value" not in str(ov.origin)
    assert str(ov.origin) == "override 1 (+env_vars=(sensitive))"


def test_a_huge_override_is_quoted_short():
    from hpctl.overrides import parse
    ov = parse("+model.notes=" + "x" * 5000, 1)
    assert len(ov.text) <= 130 and ov.text.endswith("...") and ov.value == "x" * 5000
