"""The YAML loader: plain typed data, a line:column for every key and list item, clear errors."""
from __future__ import annotations

import subprocess

import pytest

from hpctl.errors import HpctlError, Origin
from hpctl.loader import MAX_BYTES, load_file, load_text, parse_scalar

NESTED = """\
run:
  name: job
trainer:
  devices: 2
  nested:
    deeper:
      leaf: 7
model:
  betas:
  - 0.9
  - 0.95
  layers: [a, {b: 1}]
"""


def _error(fn, *args) -> HpctlError:
    with pytest.raises(HpctlError) as exc:
        fn(*args)
    return exc.value


def test_nested_keys_and_list_items_have_line_and_column():
    layer = load_text(NESTED, "recipe.yaml")
    o = layer.origins
    assert o["run.name"] == Origin("recipe.yaml", 2, 9)
    assert o["trainer.devices"] == Origin("recipe.yaml", 4, 12)
    assert o["trainer.nested.deeper.leaf"] == Origin("recipe.yaml", 7, 13)
    assert o["model.betas.0"] == Origin("recipe.yaml", 10, 5)
    assert o["model.betas.1"] == Origin("recipe.yaml", 11, 5)
    assert o["model.layers.1.b"].line == 12
    assert o["trainer"] == Origin("recipe.yaml", 3, 1)  # a section: where its key is written
    assert o["trainer.nested"] == Origin("recipe.yaml", 5, 3)
    assert o["model.betas"] == Origin("recipe.yaml", 9, 3)
    assert o["model.layers"] == Origin("recipe.yaml", 12, 3)
    assert str(o["trainer.nested.deeper.leaf"]) == "recipe.yaml:7:13"
    assert layer.data["trainer"]["nested"]["deeper"]["leaf"] == 7
    assert layer.data["model"]["layers"] == ["a", {"b": 1}]


def test_every_path_has_an_origin():
    layer = load_text(NESTED, "recipe.yaml")
    expected = {"run", "run.name", "trainer", "trainer.devices", "trainer.nested", "trainer.nested.deeper",
                "trainer.nested.deeper.leaf", "model", "model.betas", "model.betas.0", "model.betas.1",
                "model.layers", "model.layers.0", "model.layers.1", "model.layers.1.b"}
    assert set(layer.origins) == expected
    assert all(o.file == "recipe.yaml" and o.line for o in layer.origins.values())


@pytest.mark.parametrize("text, value", [
    ("true", True), ("false", False), ("True", True), ("5", 5), ("-3", -3), ("1e-5", 1e-5),
    ("1.0e+3", 1000.0), ("0.02", 0.02), ("null", None), ("~", None), ("'5'", "5"), ('"true"', "true"),
    ("abc", "abc"), ("6-00:00:00", "6-00:00:00"), ("[1, 2]", [1, 2]), ("{a: 1}", {"a": 1}),
])
def test_scalars_are_typed_as_yaml_types_them(text, value):
    data = load_text(f"key: {text}\n", "f.yaml").data
    assert data["key"] == value
    assert type(data["key"]) is type(value)


def test_values_are_plain_python_types():
    data = load_text("a: 1\nb: true\nc: [x]\nd: {e: 1.5}\n", "f.yaml").data
    assert type(data) is dict and type(data["c"]) is list and type(data["d"]) is dict
    assert type(data["a"]) is int and type(data["b"]) is bool and type(data["d"]["e"]) is float
    assert type(data["c"][0]) is str


@pytest.mark.parametrize("text, value", [
    ("5", 5), ("5.0", 5.0), ("true", True), ("null", None), ("[1,2]", [1, 2]), ("{a: 1}", {"a": 1}),
    ("'quoted'", "quoted"), ("1e-5", 1e-5), ("", ""), ("/fsx:/fsx", "/fsx:/fsx"), ("a: b: c", "a: b: c"),
])
def test_parse_scalar(text, value):
    assert parse_scalar(text) == value
    assert type(parse_scalar(text)) is type(value)


def test_duplicate_key_is_an_error_at_the_second_occurrence():
    err = _error(load_text, "a: 1\nb:\n  x: 1\n  x: 2\n", "dup.yaml")
    [p] = err.problems
    assert p.origin == Origin("dup.yaml", 4, 3)
    assert "duplicate key" in p.message and '"x"' in p.message


def test_syntax_error_names_file_and_line():
    err = _error(load_text, "a: 1\nb: [1, 2\nc: 3\n", "bad.yaml")
    assert err.problems[0].origin.file == "bad.yaml"
    assert err.problems[0].origin.line == 3
    assert err.render().startswith("bad.yaml:3:")
    assert "YAML syntax error" in err.render()


def test_bad_indentation_names_its_line():
    err = _error(load_text, "a:\n  b: 1\n c: 2\n", "indent.yaml")
    assert err.problems[0].origin.line == 3


def test_tab_indentation_names_its_line():
    err = _error(load_text, "a:\n\tb: 1\n", "tab.yaml")
    assert err.problems[0].origin.line == 2


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(text):
    err = _error(load_text, text, "empty.yaml")
    assert "empty" in err.render() and err.problems[0].origin.file == "empty.yaml"


@pytest.mark.parametrize("text, found", [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(text, found):
    err = _error(load_text, text, "top.yaml")
    [p] = err.problems
    assert "not a mapping" in p.message and p.found == found and p.origin == Origin("top.yaml", 1, 1)


def test_two_documents_are_an_error():
    err = _error(load_text, "a: 1\n---\nb: 2\n", "multi.yaml")
    assert err.problems[0].origin.line == 2


def test_binary_garbage(tmp_path):
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    err = _error(load_file, path, "recipes/garbage.yaml")
    assert "binary" in err.render() and err.problems[0].origin.file == "recipes/garbage.yaml"


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: 1\nb: 2\nname: caf\xe9\n")
    err = _error(load_file, path, "latin1.yaml")
    assert "UTF-8" in err.render() and err.problems[0].origin == Origin("latin1.yaml", 3)


@pytest.mark.slow
def test_file_over_the_size_limit_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.yaml"
    subprocess.run(["truncate", "-s", "50M", str(path)], check=True)  # sparse: no 50 MB written
    assert path.stat().st_size == 50 * 1024 * 1024 > MAX_BYTES
    err = _error(load_file, path, "huge.yaml")
    assert "too large" in err.render() and "52.4 MB" in err.render()


def test_unreadable_file(tmp_path):
    err = _error(load_file, tmp_path / "missing.yaml", "missing.yaml")
    assert "cannot read" in err.render() and err.problems[0].origin.file == "missing.yaml"


def test_utf8_bom_and_non_ascii_text_load(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffname: café\n".encode())
    assert load_file(path).data == {"name": "café"}


def test_load_file_default_display_name_is_the_path(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\n")
    layer = load_file(path)
    assert layer.source == str(path) and layer.origins["a"] == Origin(str(path), 1, 4)


def test_anchors_and_merge_keys_load_as_plain_data():
    data = load_text("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  y: 3\n", "m.yaml").data
    assert data["d"] == {"x": 1, "y": 3}


@pytest.mark.timeout(20)
def test_alias_bomb_is_refused_quickly():
    """A kilobyte of nested aliases (the 'billion laughs') must not expand into 10^8 nodes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    err = _error(load_text, "\n".join(lines) + "\n", "bomb.yaml")
    assert err.problems[0].origin.file == "bomb.yaml"
