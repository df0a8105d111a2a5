"""The Jinja environment every backend renders with.

Strict undefined (a template typo is an error, not an empty string), no autoescape (we emit shell
and YAML, not HTML), and filters that make quoting explicit: anything that reaches a shell line
goes through `shquote`, anything that reaches YAML through `yamlstr` or `tojson`, text in a
comment line through `oneline`.
"""
from __future__ import annotations

import json
import re
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


def oneline(value: Any) -> str:
    """Text for a comment line: control characters (a newline would end the comment and start a
    command) are written as escapes, as Python's repr writes them; other text is unchanged."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], "" if value is None else str(value))


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
    env.filters.update(shquote=shquote, yamlstr=yamlstr, tojson=tojson, oneline=oneline)
    return env


def render(template: str, **context: Any) -> str:
    """Render one template from templates/ with the given context."""
    return environment().get_template(template).render(**context)
