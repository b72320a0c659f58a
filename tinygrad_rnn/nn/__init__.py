"""Layers, recurrent networks, losses and initialisation: `tr.nn`.

Shape letters used throughout: N batch, T time, D input features, H hidden
size, V vocabulary, L layers.
"""

from .module import Module, ModuleList, Parameter

__all__ = ["Module", "ModuleList", "Parameter"]
