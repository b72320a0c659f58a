"""Adam's flat update (all parameters' moments in one array) against its per-parameter one.

The flat path runs when every parameter has a gradient, a dtype and a step
count in common; otherwise Adam updates parameter by parameter. Both must land
on bit-identical parameters and state, through skipped steps and state loads.
"""

from __future__ import annotations

import numpy as np
from conftest import to_host

import tinygrad_rnn as tr
from tinygrad_rnn import nn, optim

SHAPES = [(3, 4), (4,), (2, 1, 3)]


def _params():
    rng = np.random.default_rng(0)
    return [nn.Parameter(tr.tensor(rng.standard_normal(s).astype(np.float32)).data) for s in SHAPES]


def _step(opt, params, step, skip=None):
    rng = np.random.default_rng(100 + step)
    for i, p in enumerate(params):
        p.grad = None if i == skip else tr.tensor(rng.standard_normal(p.shape), dtype=p.dtype).data
    opt.step()


class _PerParameterAdam(optim.Adam):
    """The reference: Adam forced onto its per-parameter path."""

    def _flat_state(self):
        return None


def test_flat_adam_equals_per_parameter_adam_through_skips_and_loads():
    flat_params, ref_params = _params(), _params()
    flat, ref = optim.Adam(flat_params, lr=0.01), _PerParameterAdam(ref_params, lr=0.01)
    for step in range(7):
        skip = 1 if step == 3 else None  # the steps then differ: per parameter from here
        _step(flat, flat_params, step, skip)
        _step(ref, ref_params, step, skip)
        if step == 4:  # a load with equal steps gives the flat path back
            state = ref.state_dict()
            for entry in state["state"].values():
                entry["step"] = 5
            flat.load_state_dict(state)
            ref.load_state_dict(state)
    for a, b in zip(flat_params, ref_params):
        np.testing.assert_array_equal(to_host(a), to_host(b))
    flat_state, ref_state = flat.state_dict()["state"], ref.state_dict()["state"]
    for (ka, a), (kb, b) in zip(flat_state.items(), ref_state.items()):
        assert ka == kb and a["step"] == b["step"]
        np.testing.assert_array_equal(a["exp_avg"], b["exp_avg"])
        np.testing.assert_array_equal(a["exp_avg_sq"], b["exp_avg_sq"])
