"""Layers, recurrent networks, losses and initialisation: `tr.nn`.

Shape letters used throughout: N batch, T time, D input features, H hidden
size, V vocabulary, L layers.
"""

from . import functional, init
from .clip import AdaptiveClip, clip_grad_norm
from .layers import Dropout, Embedding, Linear
from .module import Module, ModuleList, Parameter
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = [
    "Module", "ModuleList", "Parameter",
    "Linear", "Embedding", "Dropout", "AdaptiveClip", "clip_grad_norm", "functional", "init",
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
]  # fmt: skip
