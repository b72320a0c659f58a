"""Griffe extension for the API reference: docstrings that a module assembles at import time.

Griffe reads the source without importing it, so a class docstring written as
``__doc__ = "..." + TEMPLATE.format(...)`` (the recurrent layers share one template) is an
expression to it, not a docstring. For every class that the source visit left without a
docstring, this imports the module and takes the class's own live ``__doc__``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import griffe


class RuntimeDocstrings(griffe.Extension):
    """Fill in class docstrings from the imported module when the source has none."""

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        if cls.docstring is not None:
            return
        try:
            live: Any = importlib.import_module(cls.module.path)
            for name in cls.path[len(cls.module.path) + 1 :].split("."):
                live = getattr(live, name)
        except Exception:  # noqa: BLE001 - a module that cannot import keeps its static view
            return
        own = vars(live).get("__doc__") if isinstance(live, type) else None
        if own:
            cls.docstring = griffe.Docstring(inspect.cleandoc(own), parent=cls)
