"""The fused layers' size-dependent paths against the step-by-step reference of test_recurrent.

Which path runs depends on the shapes: the input projection folded into the
step matmul (narrow inputs) or done for all steps at once (wide ones); gate
gradients written in rows of a big batch or copied once for a small one; the
backward factors computed in cache-sized chunks of steps; weights reordered
with one gather (small) or gate by gate (large). Each must give the
reference's values and gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_recurrent import assert_fused_matches_reference, group, random_weights

import tinygrad_rnn as tr
from tinygrad_rnn.nn import recurrent
from tinygrad_rnn.nn.cells import CELL_MATH
from tinygrad_rnn.nn.recurrent import recurrent_sequence
from tinygrad_rnn.testing import gradcheck

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def run_both(kind, layers, dirs, N, T, D, H, lengths, seed=0):
    rng = np.random.default_rng(seed)
    assert_fused_matches_reference(rng, kind, layers, dirs, N, T, D, H, lengths)


@pytest.mark.parametrize("kind", ["rnn", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("D", [1, 50])  # folded into the step matmul (not GRU), then apart
def test_a_big_batch_stores_gate_gradients_in_rows_and_matches_the_reference(kind, D):
    N = recurrent._LONG_ROW + 2
    lengths = list(np.random.default_rng(1).integers(0, 5, N))
    run_both(kind, layers=2, dirs=2, N=N, T=4, D=D, H=4, lengths=lengths)


@pytest.mark.parametrize("kind", ["rnn", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("D", [1, 50])  # folded into the step matmul (not GRU), then apart
def test_a_long_sequence_runs_backward_in_chunks_and_matches_the_reference(kind, D, monkeypatch):
    monkeypatch.setattr(recurrent, "_CHUNK_BYTES", 2880)  # 1 to 6 of the 10 steps per chunk
    run_both(kind, layers=1, dirs=2, N=5, T=10, D=D, H=6, lengths=[10, 3, 0, 7, 9])


@pytest.mark.parametrize("kind", ["rnn", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("D", [1, 50])
def test_big_weights_reordered_gate_by_gate_match_the_reference(kind, D, monkeypatch):
    monkeypatch.setattr(recurrent, "_SMALL_WEIGHT", 0)  # the path of large weights
    run_both(kind, layers=2, dirs=2, N=3, T=4, D=D, H=5, lengths=[4, 1, 3])


# ---- the same paths, finite-difference checked -------------------------------------------
# Against finite differences, not only the reference: the unidirectional big batch (what
# every unidirectional model with N >= 64 runs) and a folded input with D >= 2 and T >= 2
# (with D = 1 or T = 1, reading (D, T, N) as (T, D, N) gives the same array).
def gradcheck_layers(kind, N, T, D, H, layers=1, dirs=1, lengths=None, with_state=True, seed=0):
    """gradcheck of the outputs and final states against the input, the initial state
    and every weight, through `recurrent_sequence`."""
    rng = np.random.default_rng(seed)
    parts = 2 if kind == "lstm" else 1
    x = rng.standard_normal((N, T, D))
    state = [rng.standard_normal((layers * dirs, N, H)) for _ in range(parts)] if with_state else []
    weights = random_weights(rng, kind, D, H, layers, dirs)

    def run(x, *rest):
        given_state = (tuple(rest[:parts]) if parts == 2 else rest[0]) if state else None
        out, final = recurrent_sequence(kind, x, group(rest[len(state) :], layers), given_state,
                                        lengths)  # fmt: skip
        finals = list(final) if isinstance(final, tuple) else [final]
        return tr.concatenate([out.reshape(-1)] + [f.reshape(-1) for f in finals])

    assert gradcheck(run, [x, *state, *weights])


KINDS = ["rnn", "rnn_relu", "lstm", "gru"]
GATES = {"rnn": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunked", [False, True], ids=["one-chunk", "chunked"])
def test_a_big_unidirectional_batch_matches_finite_differences(kind, chunked, monkeypatch):
    N = recurrent._LONG_ROW  # the smallest batch that stores gate gradients in rows
    if chunked:  # one or two steps per backward chunk
        monkeypatch.setattr(recurrent, "_CHUNK_BYTES", 2 * GATES[kind] * 2 * N * 8)
    gradcheck_layers(kind, N=N, T=3, D=1, H=2)


@settings(deadline=None, max_examples=6)
@given(kind=st.sampled_from(KINDS), T=st.integers(2, 3), layers=st.integers(1, 2),
       padded=st.booleans(), with_state=st.booleans(), seed=st.integers(0, 2**16))  # fmt: skip
def test_a_big_unidirectional_batch_matches_finite_differences_varied(
    kind, T, layers, padded, with_state, seed
):
    N = recurrent._LONG_ROW
    lengths = list(np.random.default_rng(seed).integers(0, T + 1, N)) if padded else None
    gradcheck_layers(kind, N=N, T=T, D=1, H=2, layers=layers, lengths=lengths,
                     with_state=with_state, seed=seed)  # fmt: skip


FOLDING = ["rnn", "rnn_relu", "lstm"]  # the GRU never folds (its gate gradients differ)


@pytest.mark.parametrize("kind", FOLDING)
@pytest.mark.parametrize("dirs", [1, 2])
def test_a_folded_wide_input_matches_finite_differences(kind, dirs):
    D, H, T = 2, 8, 3
    assert recurrent._folds_input(CELL_MATH[kind], T, D, H)
    gradcheck_layers(kind, N=2, T=T, D=D, H=H, dirs=dirs)


@settings(deadline=None, max_examples=6)
@given(kind=st.sampled_from(FOLDING), D=st.integers(2, 3), T=st.integers(2, 4),
       N=st.integers(1, 3), dirs=st.sampled_from([1, 2]), padded=st.booleans(),
       with_state=st.booleans(), seed=st.integers(0, 2**16))  # fmt: skip
def test_a_folded_wide_input_matches_finite_differences_varied(
    kind, D, T, N, dirs, padded, with_state, seed
):
    H = 4 * D
    assert recurrent._folds_input(CELL_MATH[kind], T, D, H)
    lengths = list(np.random.default_rng(seed).integers(0, T + 1, N)) if padded else None
    gradcheck_layers(kind, N=N, T=T, D=D, H=H, dirs=dirs, lengths=lengths,
                     with_state=with_state, seed=seed)  # fmt: skip
