"""The topology registry: built-ins and third-party plugins come in the same way.

Built-ins register with the `@register("name", aliases=(...))` decorator.
Installed packages register through the entry-point group
``tinygrad_rnn.topologies``; the value names a Topology class, registered under
the entry point's name. Entry points are read lazily, the first time topologies
are listed or looked up, so importing `topologies` stays cheap.

A plugin module may itself import `topologies` and look up a built-in (to
subclass it) while it is being loaded: its lookups see what is registered so
far instead of starting discovery again, while lookups from other threads wait
for discovery to finish. A class keeps the first name it was registered under
(checkpoints store it); registering it again under another name adds an alias.
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
_discoverer: int | None = None  # the thread running discovery
_discovery_ended = threading.Condition(_lock)  # notified when a discovery has run


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
    names = list(dict.fromkeys([_key(name), *(_key(a) for a in aliases)]))
    with _lock:
        for n in names:
            holder = _holder(n)
            if holder is not None and holder is not cls and not override:
                raise ValueError(
                    f"topology name {n!r} is already registered (by {holder.__module__}."
                    f"{holder.__qualname__}); pass override=True to replace it"
                )
        # A class registered already keeps its name (checkpoints store it): another name
        # for it, such as a plugin's entry point naming a built-in, becomes an alias.
        current = next((n for n, c in _topologies.items() if c is cls), None)
        canonical = current or names[0]
        alias_names = [n for n in names if n != canonical]
        for n in [canonical, *alias_names]:
            _release(n, cls, canonical)
        _topologies[canonical] = cls
        for alias in alias_names:
            _aliases[alias] = canonical
        cls.name = canonical
        cls.aliases = tuple(a for a, c in _aliases.items() if c == canonical)


def _holder(name: str) -> type | None:
    """The class `name` resolves to now, as `get` resolves it."""
    return _topologies.get(_aliases.get(name, name))


def _release(name: str, cls: type, canonical: str) -> None:
    """Free `name` for `cls` (registered as `canonical`): an alias of another class moves,
    and a class registered under it as its own name, when it becomes an alias, goes."""
    target = _aliases.get(name)
    if target is not None and _topologies.get(target) is not cls:
        del _aliases[name]
        old = _topologies.get(target)
        if old is not None:
            old.aliases = tuple(a for a in old.aliases if a != name)
    holder = _topologies.get(name)
    if holder is not None and holder is not cls and name != canonical:
        del _topologies[name]
        for alias in [a for a, c in _aliases.items() if c == name]:
            del _aliases[alias]


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
    """Load entry-point plugins once. A lookup made by a plugin while it loads (same
    thread) returns at once with what is registered so far; other threads wait for the
    whole discovery, so they never see a partial registry."""
    global _discovery, _discoverer
    with _lock:
        if _discovery == "done":
            return
        if _discovery == "running":
            if _discoverer != threading.get_ident():
                _discovery_ended.wait_for(lambda: _discovery != "running")
            return
        _discovery, _discoverer = "running", threading.get_ident()
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
            _discovery, _discoverer = "done", None
            _discovery_ended.notify_all()


def rediscover() -> None:
    """Read the entry points again (after installing a plugin at run time)."""
    global _discovery
    with _lock:
        _discovery = "pending"
    _discover()


def get(name: str) -> type:
    """The Topology class registered under `name` or one of its aliases."""
    key = _key(name)
    with _lock:
        known = _holder(key) if _discovery == "running" else None
    if known is not None:
        # A name registered already needs no plugin: no waiting for another thread's
        # discovery, which may itself wait for this thread (a plugin module imported here
        # that looks up a built-in to subclass it, while discovery imports it too).
        return known
    _discover()
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
