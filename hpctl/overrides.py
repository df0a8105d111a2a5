"""Parse and apply command-line overrides in Hydra's grammar.

`key.path=value` sets an existing key, `+key=value` adds a new one (or fills a null), `++key=value`
adds or replaces, `~key` deletes (`~key=value` only when the value matches). Values are typed as
YAML types them. List items are addressed by index (`a.list.0`); index == length appends.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from adapter.keypath import get_path, iter_leaves, join
from adapter.secret import REDACTED, is_sensitive
from hpctl.errors import HpctlError, Origin
from hpctl.loader import parse_scalar
from hpctl.suggest import did_you_mean

KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.([A-Za-z0-9_][A-Za-z0-9_\-]*))*$")
SET, ADD, FORCE, DELETE = "set", "add", "force", "delete"


@dataclass(frozen=True)
class Override:
    kind: str
    path: str
    value: Any
    has_value: bool
    index: int  # 1-based position on the command line
    text: str

    @property
    def origin(self) -> Origin:
        return Origin(override=self.index, text=self.text)

    def with_path(self, path: str) -> "Override":
        return Override(self.kind, path, self.value, self.has_value, self.index, self.text)


MAX_SHOWN = 120  # characters of an override quoted in messages and provenance


def parse(text: str, index: int) -> Override:
    """One `key=value` argument, or a clear error saying what form was expected."""
    kind = SET
    body = text
    if body.startswith("~"):
        kind, body = DELETE, body[1:]
    elif body.startswith("++"):
        kind, body = FORCE, body[2:]
    elif body.startswith("+"):
        kind, body = ADD, body[1:]
    key, eq, raw = body.partition("=")
    if raw and is_sensitive(key):  # the override as shown in messages and provenance: never the secret
        text = text[: len(text) - len(raw)] + REDACTED
    if not eq and kind != DELETE:
        raise HpctlError(f"override '{text}' has no '='", origin=Origin(override=index, text=text),
                         expected="key.path=value, +key=value, ++key=value or ~key", found=text)
    if not KEY.match(key):
        raise HpctlError(f"override '{text}' has a malformed key '{key}'",
                         origin=Origin(override=index, text=text),
                         expected="dot-separated names and list indices, e.g. recipes.trainer.max_steps",
                         found=key or "(empty)")
    if len(text) > MAX_SHOWN:  # messages quote the override; a 10,000-character one is noise
        text = text[:MAX_SHOWN] + "..."
    try:
        value = parse_scalar(raw) if eq else None
    except HpctlError as e:  # the value alone is bad (nested too deeply): say which override
        raise HpctlError(e.problems[0].message, origin=Origin(override=index, text=text), key=key,
                         hint=e.problems[0].hint) from None
    if any(is_sensitive(path) for path, _ in iter_leaves(value)):  # a secret inside a mapping value
        text = f"{'~' if kind == DELETE else '++' if kind == FORCE else '+' if kind == ADD else ''}{key}={REDACTED}"
    return Override(kind, key, value, bool(eq), index, text)


def _parent_and_key(root: dict, path: str, ov: Override, create: bool) -> tuple[Any, str | int]:
    """Walk to the container holding the last component; create dicts on the way when allowed."""
    parts = path.split(".")
    node: Any = root
    walked = ""
    for part in parts[:-1]:
        child = _child(node, part)
        if child is _MISSING or child is None:
            if not create:
                _missing(root, walked, part, ov)
            if isinstance(node, list):
                if child is _MISSING:
                    _missing(root, walked, part, ov)
                node[int(part)] = {}  # a null item filled, as Hydra fills it (`+claims.0.name=x`)
            else:
                node[part] = {}
            child = node[int(part)] if isinstance(node, list) else node[part]
        if not isinstance(child, (dict, list)):
            raise HpctlError(f"'{join(walked, part)}' is a {type(child).__name__}, not a section",
                             origin=ov.origin, key=path, expected="a mapping or list on the way to the key")
        node = child
        walked = join(walked, part)
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit():
            raise HpctlError(f"'{walked}' is a list; address its items by index", origin=ov.origin,
                             key=path, expected=f"an index 0..{len(node)}", found=last)
        return node, int(last)
    return node, last


_MISSING = object()


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part, _MISSING)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return _MISSING


def _missing(root: dict, walked: str, part: str, ov: Override) -> None:
    here = get_path(root, walked) if walked else root
    choices = list(here) if isinstance(here, dict) else []
    hint = did_you_mean(part, choices)
    if ov.kind == SET:
        hint = (hint + " " if hint else "") + f"to add a new key, write +{ov.text}"
    raise HpctlError(f"key '{join(walked, part)}' does not exist", origin=ov.origin, key=ov.path, hint=hint)


def apply(root: dict, ov: Override, origins: dict[str, Origin]) -> None:
    """Apply one override to `root` in place and record its origin for every path it sets."""
    container, key = _parent_and_key(root, ov.path, ov, create=ov.kind in (ADD, FORCE))
    exists = (key in container) if isinstance(container, dict) else (key < len(container))
    current = container[key] if exists else None
    if ov.kind == DELETE:
        if not exists:
            _missing(root, ov.path.rpartition(".")[0], ov.path.rpartition(".")[2], ov)
        if ov.has_value and current != ov.value:
            raise HpctlError(f"cannot delete '{ov.path}': its value is {_shown(ov.path, current)}, "
                             f"not {_shown(ov.path, ov.value)}", origin=ov.origin, key=ov.path)
        del container[key]
        _forget(origins, ov.path)
        if isinstance(container, list):
            _renumber(origins, ov.path.rpartition(".")[0], key)
        return
    if ov.kind == SET and not exists:
        _missing(root, ov.path.rpartition(".")[0], ov.path.rpartition(".")[2], ov)
    if ov.kind == ADD and exists and current is not None:
        raise HpctlError(f"cannot add '{ov.path}': it already exists (value {_shown(ov.path, current)})", origin=ov.origin,
                         key=ov.path, hint=f"to replace it, write {ov.text[1:]} or +{ov.text}")
    value = copy.deepcopy(ov.value)
    if isinstance(container, list) and key == len(container):
        container.append(value)
    elif isinstance(container, list) and key > len(container):
        raise HpctlError(f"list index {key} is past the end of '{ov.path.rpartition('.')[0]}'",
                         origin=ov.origin, key=ov.path, expected=f"an index 0..{len(container)}")
    else:
        container[key] = value
    _forget(origins, ov.path)
    origins[ov.path] = ov.origin
    for sub in _subpaths(value, ov.path):
        origins[sub] = ov.origin


def _shown(path: str, value: Any) -> str:
    """A value as quoted in a message; a secret's value never is."""
    return REDACTED if is_sensitive(path) else repr(value)


def _subpaths(value: Any, path: str) -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in [join(path, k), *_subpaths(v, join(path, k))]]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in [join(path, i), *_subpaths(v, join(path, i))]]
    return []


def _forget(origins: dict[str, Origin], path: str) -> None:
    for p in [p for p in origins if p == path or p.startswith(path + ".")]:
        del origins[p]


def _renumber(origins: dict[str, Origin], list_path: str, removed: int) -> None:
    """After deleting list item `removed`, shift the origins of the items after it down by one."""
    prefix = list_path + "."
    moved = {}
    for p in [p for p in origins if p.startswith(prefix)]:
        head, _, rest = p[len(prefix):].partition(".")
        if head.isdigit() and int(head) > removed:
            moved[join(list_path, int(head) - 1) + ("." + rest if rest else "")] = origins.pop(p)
    origins.update(moved)
