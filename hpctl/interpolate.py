"""Resolve OmegaConf-style interpolations, keeping the chain of origins behind each value.

Supported: absolute `${a.b}`, relative `${.x}` (a sibling) and `${..x}` (in the parent),
interpolation inside strings, `${oc.env:VAR}` and `${oc.env:VAR,default}`, `${oc.select:key,default}`
(verl 0.7 recipes use it), and
`${hydra:runtime.choices.recipes}` (the recipe's name). `\\${` is a literal `${`.
A value that is exactly one interpolation keeps the referred value's type; inside a longer string
values are rendered as OmegaConf renders them (None -> "None").
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from adapter.keypath import get_path, join
from adapter.secret import is_sensitive
from hpctl.errors import HpctlError, Origin
from hpctl.loader import parse_scalar
from hpctl.suggest import did_you_mean

_MISSING = object()
RESOLVERS = ("oc.env", "oc.select", "hydra")


def _split(text: str) -> list[tuple[str, str]]:
    """Tokens ("lit", text) and ("ref", inner expression) of a string, nesting-aware."""
    out: list[tuple[str, str]] = []
    buf, i = "", 0
    while i < len(text):
        if text.startswith("\\${", i):
            buf += "${"
            i += 3
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(text) and depth:
                if text.startswith("${", j):
                    depth, j = depth + 1, j + 2
                    continue
                if text[j] == "}":
                    depth -= 1
                j += 1
            if depth:
                raise ValueError(f"unclosed '${{' in {text!r}")
            if buf:
                out.append(("lit", buf))
                buf = ""
            out.append(("ref", text[i + 2: j - 1]))
            i = j
        else:
            buf += text[i]
            i += 1
    if buf:
        out.append(("lit", buf))
    return out


def env_reference(text: str) -> str | None:
    """The variable `text` names when it is nothing but `${oc.env:NAME}` (no default, no other
    text), as `Resolver.call` reads it; else None. Such a value holds no secret itself."""
    try:
        tokens = _split(text.strip())
    except ValueError:
        return None
    if len(tokens) != 1 or tokens[0][0] != "ref":
        return None
    name, _, args = tokens[0][1].strip().partition(":")
    var = args.strip()
    return var if name == "oc.env" and var and "," not in var and "${" not in var else None


def has_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _to_text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return repr(value)
    return str(value)


class Resolver:
    """Resolves every interpolation in a merged tree (one instance per resolve)."""

    def __init__(self, data: dict, origins: Mapping[str, Origin], choices: Mapping[str, str], env: Mapping[str, str]):
        self.raw = data
        self.origins = origins
        self.choices = choices
        self.env = env
        self.done: dict[str, Any] = {}
        self.chains: dict[str, list[Origin]] = {}
        self.stack: list[str] = []
        self.secret_paths: set[str] = set()  # leaves holding the value of a sensitive environment variable

    def origin(self, path: str) -> Origin:
        while path:
            if path in self.origins:
                return self.origins[path]
            path = path.rpartition(".")[0]
        return Origin()

    def resolve_all(self) -> tuple[dict, dict[str, list[Origin]]]:
        result = self.node(self.raw, "")
        return result, self.chains

    def node(self, value: Any, path: str) -> Any:
        if isinstance(value, (dict, list)) and path:  # sections too: errors about a missing key point here
            self.chains.setdefault(path, [self.origin(path)])
        if isinstance(value, dict):
            return {k: self.node(v, join(path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.node(v, join(path, i)) for i, v in enumerate(value)]
        return self.leaf(path, value)

    def leaf(self, path: str, value: Any) -> Any:
        if path in self.done:
            return self.done[path]
        if not has_interpolation(value):
            self.chains.setdefault(path, [self.origin(path)])
            return value
        if path in self.stack:
            cycle = " -> ".join(self.stack[self.stack.index(path):] + [path])
            raise HpctlError(f"interpolation cycle: {cycle}", origin=self.origin(path), key=path,
                             hint="one of these values must be a plain value")
        self.stack.append(path)
        chain = [self.origin(path)]
        try:
            result = self.evaluate(value, path, chain)
        finally:
            self.stack.pop()
        self.done[path] = result
        self.chains[path] = list(dict.fromkeys(chain))
        return result

    def evaluate(self, text: str, path: str, chain: list[Origin]) -> Any:
        try:
            tokens = _split(text)
        except ValueError as e:
            raise HpctlError(str(e), origin=self.origin(path), key=path,
                             expected="${key.path} with a closing '}'") from None
        values = [v if kind == "lit" else self.expression(v, path, chain) for kind, v in tokens]
        if len(tokens) == 1 and tokens[0][0] == "ref":
            return values[0]
        return "".join(_to_text(v) for v in values)

    def expression(self, expr: str, path: str, chain: list[Origin]) -> Any:
        expr = expr.strip()
        if has_interpolation(expr):  # a nested reference, e.g. ${oc.env:X,${y}}
            expr = _to_text(self.evaluate(expr, path, chain))
        name, colon, args = expr.partition(":")
        if colon and not name.startswith("."):
            return self.call(name, args, expr, path, chain)
        return self.reference(expr, path, chain)

    def call(self, name: str, args: str, expr: str, path: str, chain: list[Origin]) -> Any:
        if name == "oc.env":
            var, comma, default = args.partition(",")
            var = var.strip()
            if var in self.env:
                if is_sensitive(var):  # ${oc.env:HF_TOKEN} is a secret whatever key holds it
                    self.secret_paths.add(path)
                return self.env[var]
            if comma:
                default = default.strip()
                return None if default in ("null", "None") else parse_scalar(default.strip("'\""))
            raise HpctlError(f"environment variable {var} is not set", origin=self.origin(path), key=path,
                             hint=f"export {var}=... or give a default: ${{oc.env:{var},value}}")
        if name == "oc.select":  # OmegaConf's: the value at a key when it exists, else the default (None)
            key, comma, default = args.partition(",")
            if get_path(self.raw, self.absolute(key.strip(), path), _MISSING) is not _MISSING:
                return self.reference(key.strip(), path, chain)
            default = default.strip()
            return None if not comma or default in ("null", "None") else parse_scalar(default.strip("'\""))
        if name == "hydra":
            key = args.strip()
            prefix = "runtime.choices."
            if key.startswith(prefix) and key[len(prefix):] in self.choices:
                return self.choices[key[len(prefix):]]
            raise HpctlError(f"unsupported Hydra value '${{{expr}}}'", origin=self.origin(path), key=path,
                             expected="${hydra:runtime.choices.recipes} or ${hydra:runtime.choices.cluster}")
        raise HpctlError(f"unknown resolver '{name}' in '${{{expr}}}'", origin=self.origin(path), key=path,
                         expected=", ".join(RESOLVERS), hint=did_you_mean(name, RESOLVERS))

    def reference(self, expr: str, path: str, chain: list[Origin]) -> Any:
        target = self.absolute(expr, path)
        raw = get_path(self.raw, target, _MISSING) if target else self.raw
        if raw is _MISSING:
            parent, _, last = target.rpartition(".")
            siblings = get_path(self.raw, parent, {}) if parent else self.raw
            hint = did_you_mean(last, siblings) if isinstance(siblings, dict) else None
            raise HpctlError(f"'${{{expr}}}' refers to '{target}', which does not exist",
                             origin=self.origin(path), key=path, hint=hint)
        value = self.node(raw, target)
        if any(p == target or p.startswith(target + ".") for p in self.secret_paths):
            self.secret_paths.add(path)  # a copy of a secret is a secret
        chain.extend(self.chains.get(target, [self.origin(target)]))
        return value

    @staticmethod
    def absolute(expr: str, path: str) -> str:
        """`.x` is a sibling of the key at `path`; each further dot climbs one level."""
        if not expr.startswith("."):
            return expr
        dots = len(expr) - len(expr.lstrip("."))
        base = path.split(".")[:-dots] if dots <= path.count(".") + 1 else []
        rest = expr[dots:]
        return ".".join([*base, rest] if rest else base)


def resolve(data: dict, origins: Mapping[str, Origin], choices: Mapping[str, str],
            env: Mapping[str, str] | None = None) -> tuple[dict, dict[str, list[Origin]]]:
    """Return the tree with every interpolation replaced, and each leaf's origin chain."""
    return Resolver(data, origins, choices, os.environ if env is None else env).resolve_all()
