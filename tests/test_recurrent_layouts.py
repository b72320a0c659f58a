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
from test_recurrent import assert_fused_matches_reference

from tinygrad_rnn.nn import recurrent

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
