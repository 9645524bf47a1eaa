"""Plugin registry backed by Python entry points.

Built-in and third-party plugins enter the same way: an entry point in one of the groups
`wsolbench.methods`, `wsolbench.protocols`, `wsolbench.datasets`. Listing reads only the
installed distributions' metadata; the plugin module is imported when a plugin is fetched,
so `wsolbench list methods` never imports torch. Unlike timm's registry (which warns), a
name registered twice is an error.

A method plugin may also register its `MethodPresets` (config class and presets) in the
group `wsolbench.method_presets`, from a module that imports no torch: `method_presets`
then reads a method's configuration without importing its model (docs/plugins.md, "Presets
without torch"); without that entry point it falls back to the method class.
"""

from __future__ import annotations

import difflib
import fnmatch
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from wsolbench.errors import WsolbenchError

KINDS = ("methods", "protocols", "datasets")
PRESETS_GROUP = "wsolbench.method_presets"


def _group(kind: str) -> str:
    if kind not in KINDS:
        raise WsolbenchError(f"unknown plugin kind {kind!r}; expected one of {', '.join(KINDS)}")
    return f"wsolbench.{kind}"


@cache
def _group_entry_points(group: str, what: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        previous = found.get(ep.name)
        if previous is not None and previous.value != ep.value:
            raise WsolbenchError(
                f"{what} {ep.name!r} is registered twice: {previous.value} and {ep.value}"
            )
        found[ep.name] = ep
    return found


def _entry_points(kind: str) -> dict[str, EntryPoint]:
    return _group_entry_points(_group(kind), kind[:-1])


def list_plugins(kind: str, pattern: str = "*") -> list[str]:
    """Names registered for `kind`, sorted, filtered by a shell-style wildcard."""
    return sorted(n for n in _entry_points(kind) if fnmatch.fnmatchcase(n, pattern))


def entry_point(kind: str, name: str) -> EntryPoint:
    """The entry point registered as `name`, not yet imported: an unknown name fails here,
    with the closest known names, before any plugin module (and torch) is imported."""
    eps = _entry_points(kind)
    if name not in eps:
        close = difflib.get_close_matches(name, list(eps), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(eps)) or "none installed"
        raise WsolbenchError(f"unknown {kind[:-1]} {name!r}{hint} (known: {known})")
    return eps[name]


def _load(ep: EntryPoint, what: str) -> Any:
    try:
        return ep.load()
    except WsolbenchError:
        raise
    except Exception as exc:  # a broken third-party plugin: name it, not a deep traceback
        raise WsolbenchError(f"{what} {ep.name!r} (entry point {ep.value!r}) failed "
                             f"to load: {type(exc).__name__}: {exc}") from None


def get_plugin(kind: str, name: str) -> Any:
    """Import and return the object an entry point names (a class or factory)."""
    return _load(entry_point(kind, name), kind[:-1])


def method_presets(name: str) -> Any:
    """Method `name`'s `config_class`, `presets` and `default_presets`: its torch-free
    `MethodPresets` where the plugin registers one under `wsolbench.method_presets`, else
    the method class itself (which carries the same three, and `posthoc`)."""
    entry_point("methods", name)  # an unknown name fails here, with the closest names
    light = _group_entry_points(PRESETS_GROUP, "method presets").get(name)
    return get_plugin("methods", name) if light is None else _load(light, "method presets")


def clear_cache() -> None:
    """Forget the cached entry points (tests that install plugins on the fly use this)."""
    _group_entry_points.cache_clear()
