"""The Jinja environment every backend renders with.

Strict undefined (a template typo is an error, not an empty string), no autoescape (we emit shell
and YAML, not HTML), and filters that make quoting explicit: anything that reaches a shell line
goes through `shquote`, anything that reaches YAML through `yamlstr` or `tojson`.
"""
from __future__ import annotations

import json
import shlex
from functools import lru_cache
from typing import Any

import jinja2

from hpctl.resources import builtin


def shquote(value: Any) -> str:
    """Quote one value for a POSIX shell; None becomes ''."""
    return shlex.quote("" if value is None else str(value))


def yamlstr(value: Any) -> str:
    """A YAML scalar that always parses back as this exact string (JSON strings are YAML)."""
    return json.dumps("" if value is None else str(value), ensure_ascii=True)


def tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True, indent=indent)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(builtin("templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(shquote=shquote, yamlstr=yamlstr, tojson=tojson)
    return env


def render(template: str, **context: Any) -> str:
    """Render one template from templates/ with the given context."""
    return environment().get_template(template).render(**context)
