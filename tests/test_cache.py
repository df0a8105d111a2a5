"""hpctl.cache: parsed layers and schema verdicts are reused by content, and a bad cache never
changes a result (corrupt entries are ignored and rewritten; HPCTL_CACHE=off disables it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from hpctl import cache, loader

YAML = "a: 1\nb:\n  c: [x, true]\n  d: 1.5e-05\n"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HPCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HPCTL_CACHE", raising=False)
    loader._parse_bytes.cache_clear()  # the in-process cache would hide the disk
    return tmp_path / "cache"


def load(tmp_path: Path, text: str = YAML) -> loader.Layer:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    loader._parse_bytes.cache_clear()
    return loader.load_file(path, "c.yaml")


def entries(root: Path, kind: str) -> list[Path]:
    return sorted((root / kind).glob("*.json")) if (root / kind).is_dir() else []


def test_a_cached_layer_equals_a_parsed_one_without_parsing(tmp_path: Path, cache_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = load(tmp_path)
    assert len(entries(cache_dir, "layer")) == 1

    def no_parse(*_: object) -> None:
        raise AssertionError("parsed again despite a cache entry")

    monkeypatch.setattr(loader, "load_text", no_parse)
    cached = load(tmp_path)
    assert cached.data == fresh.data == {"a": 1, "b": {"c": ["x", True], "d": 1.5e-05}}
    assert cached.origins == fresh.origins and str(cached.origins["b.c.1"]) == "c.yaml:3:10"


def test_a_corrupt_entry_is_ignored_and_rewritten(tmp_path: Path, cache_dir: Path) -> None:
    fresh = load(tmp_path)
    (entry,) = entries(cache_dir, "layer")
    for garbage in ("{not json", '{"key": "other", "value": 1}', '{"key": "%s", "value": {"data": 1}}' % entry.stem):
        entry.write_text(garbage)
        again = load(tmp_path)
        assert (again.data, again.origins) == (fresh.data, fresh.origins)
    assert cache.get("layer", entry.stem) is not None  # rewritten by the last parse


def test_other_content_is_another_entry_and_off_means_off(tmp_path: Path, cache_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(tmp_path).data["a"] == 1
    assert load(tmp_path, YAML.replace("a: 1", "a: 2")).data["a"] == 2
    assert len(entries(cache_dir, "layer")) == 2
    monkeypatch.setenv("HPCTL_CACHE", "off")
    assert load(tmp_path, "z: 0\n").data == {"z": 0}
    assert len(entries(cache_dir, "layer")) == 2


def test_only_valid_specs_are_remembered(cache_dir: Path) -> None:
    from hpctl.compose import compose
    from hpctl.errors import HpctlError
    from hpctl.validate import validate
    spec = compose(["tiny/tiny_llama"], "local")
    validate(spec)
    assert len(entries(cache_dir, "valid")) == 1
    validate(spec)  # a hit
    spec.data["recipes"]["trainer"]["max_steps"] = "many"
    with pytest.raises(HpctlError, match="max_steps"):
        validate(spec)
    with pytest.raises(HpctlError, match="max_steps"):  # an error is never cached away
        validate(spec)
    assert len(entries(cache_dir, "valid")) == 1
