"""Validate a resolved Spec against the JSON Schemas, reporting every violation at once.

A recipe for a training stack hpctl does not run (Nova, Trainium, ...) is refused first,
with the reason, at the key that shows it (hpctl.compat): its schema errors would only be noise.
The recipe's schema follows its run.model_type: llm_finetuning_aws recipes are checked against
llmft.schema.json, verl recipes against verl.schema.json (whose training_config is checked against
the keys of the verl version it targets, schemas/verl), the others against recipe.schema.json
(spec.schema.json's if/then/else).

Each violation becomes a Problem located through the spec's provenance (file:line of the value,
or of the section holding a missing key), with the expected shape taken from the schema and a
did-you-mean for unknown keys and enum values.

A spec that passed is remembered in hpctl.cache by the digest of its data and of the schema files,
so planning it again skips validation and the import of jsonschema.
"""
from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from adapter.digest import canonical_json
from adapter.keypath import get_path, iter_leaves, join
from adapter.secret import REDACTED, is_sensitive
from hpctl import cache, compat
from hpctl.errors import HpctlError, Origin, Problem
from hpctl.resources import builtin
from hpctl.spec import Spec
from hpctl.suggest import did_you_mean

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError
    from referencing import Registry

SPEC_SCHEMA = "spec.schema.json"


@lru_cache(maxsize=1)
def _registry() -> tuple[Registry, dict[str, dict]]:
    """Every schema file under schemas/, addressable by its path relative to schemas/ and its $id."""
    from referencing import Registry, Resource
    root = builtin("schemas")
    schemas: dict[str, dict] = {}
    registry = Registry()
    for path in sorted(root.rglob("*.json")):
        schema = json.loads(path.read_text())
        rel = path.relative_to(root).as_posix()
        schemas[rel] = schema
        resource = Resource.from_contents(schema)
        registry = registry.with_resource(rel, resource)
        if "$id" in schema:
            registry = registry.with_resource(schema["$id"], resource)
    return registry, schemas


@lru_cache(maxsize=1)
def _schemas_digest() -> str:
    """The digest of every schema file: a cached verdict holds only for the schemas it was made with."""
    root = builtin("schemas")
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.json")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator
    registry, schemas = _registry()
    if name not in schemas:
        raise HpctlError(f"schema {name} is missing from this installation")
    return Draft202012Validator(schemas[name], registry=registry)


def cluster_schema(cluster_type: str) -> str:
    return f"cluster/{cluster_type}.schema.json"


def validate(spec: Spec) -> None:
    """Raise one HpctlError listing every schema violation; return quietly when valid."""
    found = compat.refusal(spec.data)
    if found:
        raise HpctlError(unsupported_problem(found, spec.origin(found.key), get_path(spec.data, found.key)))
    digest = cache.key("valid", canonical_json(spec.data), _schemas_digest())
    if cache.get("valid", digest) is True:
        return
    problems = _non_finite(spec) + [*_problems(_validator(SPEC_SCHEMA), spec.data, "", spec)]
    ctype = spec.data.get("cluster_type")
    _, schemas = _registry()
    if isinstance(ctype, str) and cluster_schema(ctype) in schemas and isinstance(spec.data.get("cluster"), dict):
        problems += _problems(_validator(cluster_schema(ctype)), spec.data["cluster"], "cluster", spec)
    if problems:
        problems = _one_per_cause(problems, spec)
        problems.sort(key=lambda p: (p.key or ""))
        raise HpctlError(problems)
    cache.put("valid", digest, True)


def _one_per_cause(problems: list[Problem], spec: Spec) -> list[Problem]:
    """Drop a problem whose value is a copy of another reported key's (`model.precision:
    ${recipes.trainer.precision}`): the user fixes the source once, so it is reported once, at the
    source. A copy's provenance chain is its own origin followed by the source's chain."""
    def chain(key: str | None) -> list[Origin]:
        return spec.provenance.get(key or "", [])

    sources = {(tuple(chain(p.key)), p.message, p.found) for p in problems if chain(p.key)}
    return [p for p in problems
            if len(chain(p.key)) < 2 or (tuple(chain(p.key)[1:]), p.message, p.found) not in sources]


def _non_finite(spec: Spec) -> list[Problem]:
    """NaN and infinity are numbers to JSON Schema and YAML (`.nan`, `.inf`) but never a valid
    setting: no bound compares true against NaN, and JSON cannot even carry them to the job."""
    return [Problem("expected a finite number", spec.origin(path), path, found=str(value),
                    hint="NaN and infinity are not settings: give a finite number")
            for path, value in iter_leaves(spec.data)
            if isinstance(value, float) and not math.isfinite(value)]


def unsupported_problem(found: compat.Refusal, origin: Origin | None, value: Any) -> Problem:
    """A recipe hpctl cannot launch, as one located complaint that says why."""
    return Problem(f"unsupported recipe: {found.reason}", origin, found.key, found=_found(found.key, value),
                   hint=found.hint or compat.SUPPORTED)


def _problems(validator: Draft202012Validator, instance: Any, base: str, spec: Spec) -> list[Problem]:
    from jsonschema.exceptions import best_match
    out: list[Problem] = []
    for error in validator.iter_errors(instance):
        if error.validator in ("anyOf", "oneOf") and error.context:
            error = best_match(error.context)
        out.extend(_explain(error, base, spec))
    return out


def _found(path: str, value: Any, secret: bool = False) -> str:
    if secret or is_sensitive(path):
        return REDACTED
    text = json.dumps(value, default=str)
    return (text[:80] + "...") if len(text) > 80 else text


def _expected(schema: dict) -> str:
    parts = []
    if "type" in schema:
        t = schema["type"]
        parts.append(" or ".join(t) if isinstance(t, list) else t)
    if "enum" in schema:
        parts.append("one of " + ", ".join(json.dumps(v) for v in schema["enum"]))
    for k, word in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if k in schema:
            parts.append(f"{word} {schema[k]}")
    if schema.get("description"):
        parts.append(f"({schema['description']})")
    return " ".join(parts) or "a value matching the schema"


def _explain(error: ValidationError, base: str, spec: Spec) -> list[Problem]:
    path = base
    for part in error.absolute_path:
        path = join(path, part)
    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        return [Problem(f"unknown key '{k}'", spec.origin(join(path, k)) or (spec.origin(path) if path else None),
                        join(path, k) or repr(k),  # an empty key (`? ''` in YAML) is still named
                        expected=f"a key of '{path or 'the top level'}'",
                        found=repr(k), hint=did_you_mean(k, allowed)) for k in unknown]
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [Problem(f"missing required key '{missing}'", spec.origin(path), join(path, missing),
                        expected=_expected(error.schema.get("properties", {}).get(missing, {})))]
    hint = None
    if kind == "enum" and isinstance(error.instance, str):
        hint = did_you_mean(error.instance, [str(v) for v in error.validator_value])
    secret = spec.is_secret(path)
    message = {"type": "wrong type", "enum": "value not allowed"}.get(
        kind, _short(error.message, path, error.instance, secret))
    return [Problem(message, spec.origin(path), path or "(top level)",
                    expected=_expected(error.schema), found=_found(path, error.instance, secret), hint=hint)]


def _short(message: str, path: str, instance: Any, secret: bool = False) -> str:
    """jsonschema's message with the (possibly secret) instance text taken out."""
    text = json.dumps(instance, default=str) if not isinstance(instance, str) else repr(instance)
    if secret or is_sensitive(path) or len(message) > 160:
        return message.replace(text, "the value").replace(repr(instance), "the value")[:160]
    return message
