"""Typed configuration: frozen dataclasses, dotted `key=value` overrides, flat params.

Parsing never touches the file system (wsolevaluation's `config.py` creates and deletes
folders while parsing; we do not).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from typing import Any, TypeVar

from wsolbench.errors import WsolbenchError

C = TypeVar("C")


def _coerce(raw: str, current: Any, key: str) -> Any:
    """Turn an override string into the type of the field's current value."""
    try:
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, tuple):
            value = json.loads(raw if raw.strip().startswith("[") else f"[{raw}]")
            return tuple(value)
        if current is None:
            return None if raw.lower() in ("none", "null", "") else raw
        return raw
    except (ValueError, json.JSONDecodeError):
        kind = type(current).__name__
        raise WsolbenchError(f"override {key}={raw!r}: expected a value of type {kind}") from None


def apply_overrides(cfg: C, overrides: dict[str, str]) -> C:
    """Return a copy of a (possibly nested) frozen dataclass with `a.b=value` overrides applied.

    Unknown keys are errors with a "did you mean" hint; values are coerced to the field type.
    """
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, str]] = {}
    names = [f.name for f in dataclasses.fields(cfg)]  # type: ignore[arg-type]
    for key, raw in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:
            close = difflib.get_close_matches(head, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise WsolbenchError(f"unknown config key {key!r} for {type(cfg).__name__}{hint}")
        current = getattr(cfg, head)
        if rest:
            if not dataclasses.is_dataclass(current):
                raise WsolbenchError(f"config key {head!r} has no sub-keys (got {key!r})")
            nested.setdefault(head, {})[rest] = raw
        else:
            changes[head] = _coerce(raw, current, key)
    for head, sub in nested.items():
        changes[head] = apply_overrides(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def parse_overrides(pairs: typing.Iterable[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise WsolbenchError(f"override {pair!r} must look like key=value")
        out[key.strip()] = value.strip()
    return out


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts/dataclasses into `a.b.c` keys (MLflow params)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
