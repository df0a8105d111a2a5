"""Typed, located reading of a recipe, collecting every refusal instead of stopping at the first.

The trainer's rules about what it accepts live in v1.py (v1 recipes) and llmft.py (v2 LLMFT
recipes); both read through `Reader`, so a bad value is reported by its key path with what was
found and what is expected, and a recipe with five problems names all five at once. hpctl runs the
same code at plan time (it is torch-free), which is why it must never stop at the first error.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A spec the trainer refuses: printed as one line (`key: message (hint)`), no traceback."""

    def __init__(self, key: str, message: str, hint: str | None = None) -> None:
        self.key, self.message, self.hint = key, message, hint
        super().__init__(f"{key}: {message}" + (f" ({hint})" if hint else ""))

    @property
    def errors(self) -> list["ConfigError"]:
        return [self]


class InvalidConfig(ConfigError):
    """Every refusal of one recipe. Behaves as its first error (key, message, hint) for callers
    that handle one; `errors` holds them all, and str() gives one line each."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.key, first.message, first.hint)
        self._errors = list(errors)
        self.args = ("\n".join(str(e) for e in errors),)

    @property
    def errors(self) -> list[ConfigError]:
        return self._errors

    def __str__(self) -> str:
        return self.args[0]


class Reader:
    """Typed access to dotted keys of the recipe. A value of the wrong type or out of bounds is
    recorded (`errors`) and the default is returned, so reading goes on and finds the rest."""

    def __init__(self, recipe: Mapping[str, Any], errors: list[ConfigError] | None = None,
                 key_name: Callable[[str], str] | None = None) -> None:
        self.recipe = recipe
        self.errors: list[ConfigError] = [] if errors is None else errors
        self._key_name = key_name

    def name(self, key: str) -> str:
        """How the user's recipe names `key`, for a message that mentions another key than the one
        it is reported at: the key itself, or in a recipe translated from LLMFT the LLMFT key
        (`key_name`), so the message never names a key the user's recipe lacks."""
        return self._key_name(key) if self._key_name else key

    def refuse(self, key: str, message: str, hint: str | None = None) -> None:
        """Record a refusal; one per key (the first reason found for a key is the one shown)."""
        if not any(e.key == key for e in self.errors):
            self.errors.append(ConfigError(key, message, hint))

    def guard(self, default: T, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call `fn`; a ConfigError it raises is recorded and `default` returned instead."""
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            for error in exc.errors:
                self.refuse(error.key, error.message, error.hint)
            return default

    def check(self) -> None:
        """Raise every recorded refusal at once (InvalidConfig), or return when there is none."""
        if self.errors:
            raise InvalidConfig(self.errors)

    def raw(self, key: str, default: Any = None) -> Any:
        node: Any = self.recipe
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        if isinstance(node, str) and "${" in node:
            self.refuse(key, f"unresolved interpolation {node!r}", "run the spec through `hpctl plan`")
            return default
        return default if node is None else node

    def int(self, key: str, default: int | None = None, minimum: int | None = None) -> int | None:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.refuse(key, f"expected an integer, found {value!r}")
            return default
        if minimum is not None and value < minimum:
            self.refuse(key, f"must be >= {minimum}, found {value}")
            return default if default is None or default >= minimum else minimum
        return value

    def float(self, key: str, default: float | None = None) -> float | None:
        value = self.raw(key, default)
        if value is None:
            return None
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            self.refuse(key, f"expected a number, found {value!r}")
            return default
        if not math.isfinite(number):
            self.refuse(key, f"expected a finite number, found {value!r}")
            return default
        return number

    def bool(self, key: str, default: bool = False) -> bool:
        value = self.raw(key, default)
        if isinstance(value, str) and value.lower() in ("true", "false", "none"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.refuse(key, f"expected true or false, found {value!r}")
            return default
        return value

    def str(self, key: str, default: str | None = None) -> str | None:
        value = self.raw(key, default)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return default
        if isinstance(value, (Mapping, list)):
            self.refuse(key, f"expected a string, found {type(value).__name__} {value!r}"[:200])
            return default
        return str(value)


def resolve_local(name_or_path: str, key: str = "model.hf_model_name_or_path") -> Path:
    """A local model or tokenizer directory, or the Hugging Face cache's copy of a hub id; never the
    network. `key` names the spec field in the error."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or name_or_path.startswith((".", "~")):
        raise ConfigError(key, f"{name_or_path} is not a directory")
    from huggingface_hub import snapshot_download  # light, torch-free
    try:
        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss means the same thing here
        home = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise ConfigError(key, f"{name_or_path!r} is neither a local directory nor in the Hugging Face cache ({home})",
                          "the trainer has no network: download it beforehand or give a directory") from None
