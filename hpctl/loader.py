"""Load YAML files into plain data, remembering where every value was written.

ruamel.yaml's round-trip loader keeps each key's and item's line and column; we turn its nodes
into plain dicts, lists and scalars and keep a flat map `path -> Origin` beside them, so every
later stage can point a user at file:line. A parsed file is kept in hpctl.cache by its bytes, so a
repeated plan neither parses it again nor imports ruamel.yaml.
"""
from __future__ import annotations

import copy
import datetime
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from adapter.keypath import join
from hpctl import cache
from hpctl.errors import HpctlError, Origin

MAX_BYTES = 5 * 1024 * 1024  # a config is kilobytes; anything past this is a mistake
MAX_VALUES = 100_000  # keys and list items; a few nested aliases (the "billion laughs") expand past it
MAX_DEPTH = 64  # nested mappings and lists; configs use under 10, and each later stage recurses per level
TOO_DEEP = f"values nest more than {MAX_DEPTH} levels deep"
BRACKETS = re.compile(r"[\[\]{}]")


def _too_deep_flow(text: str) -> int | None:
    """The line where [ and { first nest deeper than MAX_DEPTH, else None.

    Counted on the raw text, before ruamel sees it: its scanner takes quadratic time on deep flow
    nesting (5,000 levels ran for minutes). Brackets inside quoted strings count too, which only
    matters for a string holding dozens of unmatched ones.
    """
    depth = 0
    for match in BRACKETS.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_DEPTH:
            return text.count("\n", 0, match.start()) + 1
    return None


@dataclass
class Layer:
    """One input's data plus the origin of each of its paths (relative to the layer's root)."""

    data: dict[str, Any]
    origins: dict[str, Origin] = field(default_factory=dict)
    source: str = ""  # the file's display path, or "overrides"


def load_text(text: str, source: str) -> Layer:
    """Parse YAML text whose top level must be a mapping."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    _import_node_types()
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    line = _too_deep_flow(text)
    if line is not None:
        raise HpctlError(f"values nest more than {MAX_DEPTH} levels deep", origin=Origin(source, line),
                         hint="a config nests a few levels; check the [ and { brackets")
    try:
        doc = yaml.load(text)
    except RecursionError:
        raise HpctlError(TOO_DEEP, origin=Origin(source), hint="configs nest a few levels; flatten the value") from None
    except (ValueError, KeyError, IndexError, TypeError) as e:  # ruamel builds !!int, !!float, !!bool unguarded
        line = next((i for i, t in enumerate(text.splitlines(), 1) if "!!" in t), None)
        raise HpctlError("a value does not fit its YAML tag", origin=Origin(source, line),
                         found=f"{type(e).__name__}: {e}", hint="remove the !! tag or fix the value") from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        origin = Origin(source, mark.line + 1, mark.column + 1) if mark else Origin(source)
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise HpctlError(f"YAML syntax error: {what}", origin=origin,
                         hint="check indentation, quoting and the ':' after each key") from None
    except YAMLError as e:
        raise HpctlError(f"YAML error: {e}", origin=Origin(source)) from None
    if doc is None:
        raise HpctlError("the file is empty", origin=Origin(source), expected="a YAML mapping")
    if not isinstance(doc, CommentedMap):
        raise HpctlError("the top level is not a mapping", origin=Origin(source, 1, 1),
                         expected="a YAML mapping (key: value lines)", found=type(_plain(doc)).__name__)
    origins: dict[str, Origin] = {}
    return Layer(_convert(doc, "", source, origins), origins, source)


def load_file(path: Path, source: str | None = None) -> Layer:
    """Read and parse one YAML file, with clear errors for unreadable, huge or binary files.

    `source` is the name shown in messages and provenance (the workspace chooses a name that does
    not depend on the current directory, so plans stay byte-identical wherever they are made).
    """
    source = source or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise HpctlError(f"the file is {size / 1e6:.1f} MB, too large for a config",
                             origin=Origin(source), expected=f"at most {MAX_BYTES // (1024 * 1024)} MiB")
        raw = path.read_bytes()
    except OSError as e:
        raise HpctlError(f"cannot read the file: {e.strerror}", origin=Origin(source)) from None
    return copy.deepcopy(_parse_bytes(raw, source))


@lru_cache(maxsize=256)
def _parse_bytes(raw: bytes, source: str) -> Layer:
    """Parsing is the slow part of composing; `hpctl recipes check` reads the same config and
    cluster files once per recipe, so parses are cached by content (callers get a deep copy)."""
    if b"\x00" in raw:
        raise HpctlError("the file is binary, not YAML text", origin=Origin(source))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise HpctlError("the file is not UTF-8 text", origin=Origin(source, line)) from None
    digest = cache.key("layer", raw, source)
    stored = cache.get("layer", digest)
    if stored is not None:
        try:
            return Layer(stored["data"], {path: Origin(source, *pos) for path, pos in stored["origins"].items()},
                         source)
        except (KeyError, TypeError, AttributeError):
            pass  # a corrupt entry: parse again and overwrite it
    layer = load_text(text, source)
    cache.put("layer", digest, {"data": layer.data,
                                "origins": {p: [o.line, o.col] if o.line else [] for p, o in layer.origins.items()}})
    return layer


def parse_scalar(text: str) -> Any:
    """A command-line value typed as YAML would type it (`5` int, `1e-5` float, `[a, b]` list)."""
    if text == "":
        return ""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError
    _import_node_types()
    if _too_deep_flow(text) is not None:
        raise HpctlError(TOO_DEEP, hint="configs nest a few levels; flatten the value")
    yaml = YAML(typ="rt")
    try:
        value = yaml.load(text)
    except (YAMLError, ValueError, KeyError, IndexError, TypeError):
        return text  # not YAML (or a value that does not fit its !! tag): keep the text as typed
    except RecursionError:
        raise HpctlError(TOO_DEEP, hint="configs nest a few levels; flatten the value") from None
    return _plain(value)


CommentedMap: Any = None  # ruamel.yaml's node types, imported by the first parse (a cached plan needs none)
CommentedSeq: Any = None
ScalarBoolean: Any = None


def _import_node_types() -> None:
    global CommentedMap, CommentedSeq, ScalarBoolean
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarbool import ScalarBoolean


def _position(node: Any, key: Any) -> tuple[int, int] | None:
    try:
        if isinstance(node, CommentedMap):  # a section is where its key is; a scalar where its value is
            nested = isinstance(node[key], (CommentedMap, CommentedSeq))
            line, col = node.lc.key(key) if nested else node.lc.value(key)
        else:
            line, col = node.lc.item(key)
        return line + 1, col + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return None


def _convert(node: Any, path: str, source: str, origins: dict[str, Origin], depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise HpctlError(TOO_DEEP, origin=origins.get(path, Origin(source)), key=path,
                         hint="configs nest a few levels; flatten the value")
    if len(origins) > MAX_VALUES:
        raise HpctlError(f"the file expands to more than {MAX_VALUES} keys and list items",
                         origin=Origin(source), hint="nested YAML aliases (*name) multiply; write the values out")
    if depth > MAX_DEPTH:
        raise HpctlError(f"values nest more than {MAX_DEPTH} levels deep", origin=origins.get(path, Origin(source)),
                         hint="a config nests a few levels; check the indentation")
    if isinstance(node, CommentedMap):
        out = {}
        for k, v in node.items():
            key = str(k)
            sub = join(path, key)
            pos = _position(node, k)
            origins[sub] = Origin(source, *pos) if pos else Origin(source)
            out[key] = _convert(v, sub, source, origins, depth + 1)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for i, v in enumerate(node):
            sub = join(path, i)
            pos = _position(node, i)
            origins[sub] = Origin(source, *pos) if pos else Origin(source)
            out_list.append(_convert(v, sub, source, origins, depth + 1))
        return out_list
    return _plain(node)


def _plain(value: Any, depth: int = 0) -> Any:
    """ruamel's scalar subclasses to plain Python values (ScalarBoolean is an int subclass)."""
    if depth > MAX_DEPTH:
        raise HpctlError(TOO_DEEP, hint="configs nest a few levels; flatten the value")
    if value is None:
        return None
    if isinstance(value, ScalarBoolean) or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return str(value)
