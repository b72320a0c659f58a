"""Topologies: how a recurrent network is wired in time, as plugins.

    import topologies
    topologies.available()            # {"many-to-one": "Reads a sequence ...", ...}
    topo = topologies.create("seq2seq", peeky=True)

Built-ins register through the same decorator a third-party module uses;
installed packages add theirs through the entry-point group
``tinygrad_rnn.topologies``. See `topologies.base` for the contract.
"""

from .base import (
    CELLS,
    HEADS,
    Head,
    ModelSpec,
    RecurrentModel,
    StepOutput,
    Topology,
    TopologyDataError,
    apply_init,
    as_values,
    detach_state,
    inference,
    make_recurrent,
    targets_like,
)
from .registry import (
    ENTRY_POINT_GROUP,
    PluginLoadError,
    TopologyNotFoundError,
    available,
    create,
    get,
    rediscover,
    register,
    unregister,
)

__all__ = [
    "Topology", "TopologyDataError", "ModelSpec", "StepOutput", "Head", "RecurrentModel",
    "make_recurrent", "apply_init", "detach_state", "as_values", "inference", "targets_like",
    "CELLS", "HEADS",
    "ENTRY_POINT_GROUP", "PluginLoadError", "TopologyNotFoundError",
    "register", "unregister", "get", "create", "available", "rediscover",
]  # fmt: skip

# The built-ins register themselves on import, through `register` like any plugin.
from . import many_to_one, one_to_many, one_to_one, seq2seq, synced  # noqa: E402, F401
