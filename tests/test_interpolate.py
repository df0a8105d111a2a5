"""OmegaConf-style interpolation with origin chains, on loaded YAML so origins are real lines."""
from __future__ import annotations

import pytest

from hpctl.errors import HpctlError, Origin
from hpctl.interpolate import resolve
from hpctl.loader import load_text

CHOICES = {"recipes": "training/llama/x", "cluster": "slurm"}


def _resolve(text: str, env: dict[str, str] | None = None) -> tuple[dict, dict[str, list[Origin]]]:
    layer = load_text(text, "f.yaml")
    return resolve(layer.data, layer.origins, CHOICES, env or {})


def _value(text: str, path: str = "v", env: dict[str, str] | None = None):
    data, _ = _resolve(text, env)
    for part in path.split("."):
        data = data[part]
    return data


def _error(text: str, env: dict[str, str] | None = None) -> HpctlError:
    with pytest.raises(HpctlError) as exc:
        _resolve(text, env)
    return exc.value


def test_absolute_reference_keeps_the_type():
    data, _ = _resolve("a:\n  b: 5\n  c: [1, 2]\n  d: null\nv: ${a.b}\nw: ${a.c}\nx: ${a.d}\ny: ${a}\n")
    assert data["v"] == 5 and data["w"] == [1, 2] and data["x"] is None
    assert data["y"] == {"b": 5, "c": [1, 2], "d": None}


def test_relative_sibling_and_parent():
    text = "top: 1\nrun:\n  name: job\n  dir: /r/${.name}\n  up: ${..top}\n  deep:\n    x: ${..name}\n    y: ${...top}\n"
    data, _ = _resolve(text)
    assert data["run"] == {"name": "job", "dir": "/r/job", "up": 1, "deep": {"x": "job", "y": 1}}


def test_inside_strings_values_render_as_text():
    data, _ = _resolve("n: 8\nf: 0.5\nb: true\nz: null\nv: a-${n}-${f}-${b}-${z}\n")
    assert data["v"] == "a-8-0.5-True-None"


def test_two_references_side_by_side():
    assert _value("a: x\nb: y\nv: ${a}${b}\n") == "xy"


def test_reference_into_a_list_item():
    assert _value("l: [a, {k: 3}]\nv: ${l.1.k}\n") == 3


def test_env_resolver():
    assert _value("v: ${oc.env:HPCTL_T}\n", env={"HPCTL_T": "val"}) == "val"
    assert _value("v: x/${oc.env:HPCTL_T}/y\n", env={"HPCTL_T": "val"}) == "x/val/y"


def test_env_resolver_default_is_yaml_typed():
    assert _value("v: ${oc.env:HPCTL_T,fallback}\n") == "fallback"
    assert _value("v: ${oc.env:HPCTL_T,5}\n") == 5
    assert _value("v: ${oc.env:HPCTL_T,null}\n") is None
    assert _value("v: ${oc.env:HPCTL_T,'quoted'}\n") == "quoted"
    assert _value("v: ${oc.env:HPCTL_T,5}\n", env={"HPCTL_T": "7"}) == "7"


def test_env_resolver_default_may_itself_interpolate():
    assert _value("d: /data\nv: ${oc.env:HPCTL_T,${d}}\n") == "/data"


def test_env_resolver_missing_variable():
    err = _error("a: 1\nv: ${oc.env:HPCTL_UNSET_VAR}\n")
    [p] = err.problems
    assert "HPCTL_UNSET_VAR is not set" in p.message and p.origin == Origin("f.yaml", 2, 4) and p.key == "v"
    assert "${oc.env:HPCTL_UNSET_VAR,value}" in p.hint


def test_hydra_choices():
    data, _ = _resolve("v: ${hydra:runtime.choices.recipes}\nw: ${hydra:runtime.choices.cluster}\n")
    assert data == {"v": "training/llama/x", "w": "slurm"}


def test_unsupported_hydra_value():
    err = _error("v: ${hydra:runtime.output_dir}\n")
    assert "unsupported Hydra value" in err.render() and err.problems[0].origin.line == 1


def test_unknown_resolver_has_did_you_mean():
    err = _error("v: ${oc.envv:X}\n")
    assert "unknown resolver 'oc.envv'" in err.render() and "did you mean 'oc.env'?" in err.render()


def test_nested_chain_of_references():
    data, chains = _resolve("a: 1\nb: ${a}\nc: ${b}\nv: x${c}\n")
    assert data["v"] == "x1"
    assert [o.line for o in chains["v"]] == [4, 3, 2, 1]


def test_escaped_dollar_is_literal():
    data, _ = _resolve("a: 1\nv: \\${a}\nw: 'cost: \\${a} and ${a}'\n")
    assert data["v"] == "${a}" and data["w"] == "cost: ${a} and 1"


def test_cycle_names_the_file_and_line_of_the_referring_value():
    err = _error("a: 1\nx: ${y}\ny: ${z}\nz: ${x}\n")
    [p] = err.problems
    assert p.origin == Origin("f.yaml", 2, 4) and p.key == "x"
    assert "cycle" in p.message and "x -> y -> z -> x" in p.message
    assert err.render().startswith("f.yaml:2:4: x: interpolation cycle")


def test_self_reference_is_a_cycle():
    err = _error("run:\n  name: ${.name}\n")
    assert "cycle" in err.render() and err.problems[0].origin == Origin("f.yaml", 2, 9)


def test_missing_reference_has_did_you_mean_and_location():
    err = _error("trainer:\n  max_steps: 5\nmodel:\n  decay: ${trainer.max_step}\n")
    [p] = err.problems
    assert "refers to 'trainer.max_step', which does not exist" in p.message
    assert p.origin == Origin("f.yaml", 4, 10) and p.key == "model.decay"
    assert p.hint == "did you mean 'max_steps'?"


def test_missing_relative_reference():
    err = _error("run:\n  name: x\n  dir: ${.nme}\n")
    assert "refers to 'run.nme'" in err.render() and "did you mean 'name'?" in err.render()


def test_unclosed_interpolation():
    err = _error("v: ${a\n")
    assert "unclosed" in err.render() and err.problems[0].origin.line == 1


def test_chain_in_provenance_lists_each_origin_once_in_order():
    text = "base: /r\nrun:\n  name: job\n  results_dir: ${base}/${.name}\n  ckpt: ${.results_dir}/ckpt\n"
    _, chains = _resolve(text)
    assert [str(o) for o in chains["run.results_dir"]] == ["f.yaml:4:16", "f.yaml:1:7", "f.yaml:3:9"]
    assert [str(o) for o in chains["run.ckpt"]] == ["f.yaml:5:9", "f.yaml:4:16", "f.yaml:1:7", "f.yaml:3:9"]
    assert chains["run.name"] == [Origin("f.yaml", 3, 9)]


def test_plain_values_pass_through_untouched():
    text = "a: 1\nb: [x, {c: d}]\ne: '$HOME and {braces}'\n"
    data, chains = _resolve(text)
    assert data == load_text(text, "f.yaml").data
    assert chains["b.1.c"] == [Origin("f.yaml", 2, 12)]


def test_resolution_does_not_mutate_its_input():
    layer = load_text("a: 1\nv: ${a}\n", "f.yaml")
    resolve(layer.data, layer.origins, CHOICES, {})
    assert layer.data["v"] == "${a}"


def test_sections_have_an_origin_too():
    """A missing key is reported at its section, so sections must keep where they were written."""
    _, chains = _resolve("a: 1\nrun:\n  name: x\nl:\n- 1\n")
    assert chains["run"] == [Origin("f.yaml", 2, 1)] and chains["l"] == [Origin("f.yaml", 4, 1)]
    assert "" not in chains
