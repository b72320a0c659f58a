"""The topology registry: built-ins and third-party plugins come in the same way.

Built-ins register with the `@register("name", aliases=(...))` decorator.
Installed packages register through the entry-point group
``tinygrad_rnn.topologies``; the value names a Topology class, registered under
the entry point's name. Entry points are read lazily, the first time topologies
are listed or looked up, so importing `topologies` stays cheap.

A plugin module may itself import `topologies` and look up a built-in (to
subclass it) while it is being loaded: lookups made during discovery see what
is registered so far instead of starting discovery again.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

__all__ = [
    "ENTRY_POINT_GROUP",
    "TopologyNotFoundError",
    "PluginLoadError",
    "register",
    "get",
    "create",
    "available",
    "unregister",
]

ENTRY_POINT_GROUP = "tinygrad_rnn.topologies"


class TopologyNotFoundError(KeyError):
    """No topology is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class PluginLoadError(ImportError):
    """A plugin failed to load while TINYGRAD_RNN_STRICT_PLUGINS=1."""


_topologies: dict[str, type] = {}  # canonical name -> class
_aliases: dict[str, str] = {}  # alias -> canonical name
_lock = threading.RLock()
_discovery = "pending"  # "pending" -> "running" -> "done"


def _key(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


def register(
    name: str, aliases: tuple[str, ...] = (), override: bool = False
) -> Callable[[type], type]:
    """Class decorator: make a Topology subclass available under `name` (and aliases).

    A name that is taken raises ValueError unless `override=True`.
    """

    def decorate(cls: type) -> type:
        _add(cls, name, aliases, override)
        return cls

    return decorate


def _add(cls: Any, name: str, aliases: tuple[str, ...], override: bool) -> None:
    from .base import Topology  # here: base imports nothing from the registry

    if not (isinstance(cls, type) and issubclass(cls, Topology)):
        raise TypeError(f"topology {name!r} must be a subclass of topologies.Topology; got {cls!r}")
    canonical = _key(name)
    names = [canonical, *(_key(a) for a in aliases)]
    with _lock:
        for n in names:
            holder = _topologies.get(n) or _topologies.get(_aliases.get(n, ""))
            if holder is not None and holder is not cls and not override:
                raise ValueError(
                    f"topology name {n!r} is already registered (by {holder.__module__}."
                    f"{holder.__qualname__}); pass override=True to replace it"
                )
        _topologies[canonical] = cls
        cls.name = canonical
        cls.aliases = tuple(names[1:])
        for alias in names[1:]:
            _aliases[alias] = canonical


def unregister(name: str) -> None:
    """Remove a topology and its aliases (tests and plugin reloads use this)."""
    with _lock:
        canonical = _aliases.get(_key(name), _key(name))
        cls = _topologies.pop(canonical, None)
        for alias in [a for a, c in _aliases.items() if c == canonical]:
            del _aliases[alias]
        if cls is None:
            raise TopologyNotFoundError(f"no topology named {name!r} to unregister")


def _discover() -> None:
    """Load entry-point plugins once. Re-entrant calls during loading return at once."""
    global _discovery
    with _lock:
        if _discovery != "pending":
            return
        _discovery = "running"
    strict = os.environ.get("TINYGRAD_RNN_STRICT_PLUGINS", "") not in ("", "0")
    try:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                cls = ep.load()
                _add(cls, ep.name, (), override=_topologies.get(_key(ep.name)) is cls)
            except Exception as err:
                message = (
                    f"topology plugin {ep.name!r} ({ep.value}) failed to load: "
                    f"{type(err).__name__}: {err}"
                )
                if strict:
                    raise PluginLoadError(message) from err
                warnings.warn(message + " (skipped)", RuntimeWarning, stacklevel=3)
    finally:
        with _lock:
            _discovery = "done"


def rediscover() -> None:
    """Read the entry points again (after installing a plugin at run time)."""
    global _discovery
    with _lock:
        _discovery = "pending"
    _discover()


def get(name: str) -> type:
    """The Topology class registered under `name` or one of its aliases."""
    _discover()
    key = _key(name)
    with _lock:
        cls = _topologies.get(_aliases.get(key, key))
        if cls is None:
            listing = ", ".join(sorted(_topologies)) or "none"
            raise TopologyNotFoundError(f"unknown topology {name!r}; available: {listing}")
        return cls


def create(name: str, **options: Any) -> Any:
    """An instance of the topology `name`, configured with `options`."""
    return get(name)(**options)


def available() -> dict[str, str]:
    """Each registered name with its one-line description, sorted by name."""
    _discover()
    with _lock:
        return {n: cls.summary() for n, cls in sorted(_topologies.items())}
