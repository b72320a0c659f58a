"""StatefulBatcher: lanes read in time order, continuity across batches, exact counts.

The corpus is ``arange(L)``, so every id is its own position and the batches show exactly
which positions were read.
"""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_rnn.data import StatefulBatcher, check_not_shuffled, lane_range


@st.composite
def layouts(draw, max_batch=12, max_time=25):
    """(length, batch_size, time_size) with at least one batch: length >= B*T + 1."""
    batch_size = draw(st.integers(1, max_batch))
    time_size = draw(st.integers(1, max_time))
    length = batch_size * time_size + 1 + draw(st.integers(0, 250))
    return length, batch_size, time_size


def _batcher(length, batch_size, time_size, **kwargs):
    return StatefulBatcher(np.arange(length), batch_size, time_size, **kwargs)


@settings(deadline=None)
@given(layouts())
def test_each_lane_continues_exactly_where_it_stopped(layout):
    batcher = _batcher(*layout)
    batches = list(batcher)
    for (x0, t0), (x1, _) in zip(batches, batches[1:]):
        np.testing.assert_array_equal(x1[:, 0], x0[:, -1] + 1)
        # The last target of batch k is the first input of batch k+1.
        np.testing.assert_array_equal(t0[:, -1], x1[:, 0])


@settings(deadline=None)
@given(layouts())
def test_targets_are_inputs_shifted_by_one_step(layout):
    batcher = _batcher(*layout)
    for k, (x, t) in enumerate(batcher):
        np.testing.assert_array_equal(t, x + 1)
        expected = batcher.offsets[:, None] + k * batcher.time_size + np.arange(batcher.time_size)
        np.testing.assert_array_equal(x, expected)


@settings(deadline=None)
@given(layouts())
def test_lanes_are_disjoint_and_each_position_is_read_once(layout):
    length, batch_size, time_size = layout
    batcher = _batcher(*layout)
    jump = (length - 1) // batch_size
    assert batcher.jump == jump
    np.testing.assert_array_equal(batcher.offsets, np.arange(batch_size) * jump)
    xs = np.stack([x for x, _ in batcher])  # (K, B, T)
    for lane in range(batch_size):
        read = xs[:, lane, :].ravel()
        # Inside the lane's own stretch, never another lane's inputs, never wrapped around.
        assert read.min() >= lane * jump and read.max() < (lane + 1) * jump
        assert np.all(np.diff(read) == 1)  # in time order
    flat = xs.ravel()
    assert len(np.unique(flat)) == flat.size
    assert flat.max() < length - 1  # every input has a next step as its target


@settings(deadline=None)
@given(layouts())
def test_counts_are_exact_and_the_leftover_is_as_documented(layout):
    length, batch_size, time_size = layout
    batcher = _batcher(*layout)
    jump = (length - 1) // batch_size
    batches = list(batcher)
    assert len(batches) == len(batcher) == jump // time_size
    assert all(x.shape == (batch_size, time_size) for x, _ in batches)
    read = len(batches) * batch_size * time_size
    leftover = batch_size * (jump % time_size) + (length - 1) % batch_size + 1
    assert read + leftover == length


@settings(deadline=None)
@given(layouts(), st.integers(1, 4))
def test_float_series_keep_their_feature_axis(layout, features):
    length, batch_size, time_size = layout
    scale = 10.0 ** np.arange(features)
    series = (np.arange(length)[:, None] * scale).astype(np.float32)  # (L, F)
    batcher = StatefulBatcher(series, batch_size, time_size)
    ids = StatefulBatcher(np.arange(length), batch_size, time_size)
    assert batcher.num_features == features and ids.num_features is None
    for (x, t), (xi, ti) in zip(batcher, ids):
        assert x.shape == t.shape == (batch_size, time_size, features)
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, xi[..., None] * scale)
        np.testing.assert_array_equal(t, ti[..., None] * scale)


def test_a_one_dimensional_float_series_gets_one_feature():
    x, t = next(iter(StatefulBatcher(np.linspace(0, 1, 50), 4, 5)))
    assert x.shape == t.shape == (4, 5, 1)


def test_token_ids_keep_their_dtype():
    x, t = next(iter(StatefulBatcher(np.arange(50, dtype=np.int32), 4, 5)))
    assert x.dtype == t.dtype == np.int32 and x.shape == (4, 5)


def test_shuffling_is_refused_with_a_one_line_reason():
    with pytest.raises(ValueError) as info:
        StatefulBatcher(np.arange(100), 4, 5, shuffle=True)
    message = str(info.value)
    assert "shuffle" in message and "\n" not in message
    with pytest.raises(ValueError, match="Trainer: .*shuffle"):
        check_not_shuffled(True, "Trainer")
    check_not_shuffled(False, "Trainer")


def test_too_short_data_raises_with_the_numbers():
    with pytest.raises(ValueError) as info:
        StatefulBatcher(np.arange(20), 4, 5)  # jump = 19 // 4 = 4 < 5
    message = str(info.value)
    assert "20" in message and "jump" in message and "4" in message and "5" in message


@pytest.mark.parametrize("shape", [(10, 2, 2), ()])
def test_data_of_the_wrong_rank_is_refused(shape):
    with pytest.raises(ValueError, match="shape"):
        StatefulBatcher(np.zeros(shape), 1, 1)


def test_epoch_start_is_batch_zero_of_every_epoch():
    batcher = StatefulBatcher(np.arange(101), 4, 5)  # jump 25, 5 batches
    assert len(batcher) == 5
    starts = [step for step in range(12) if batcher.epoch_start(step)]
    assert starts == [0, 5, 10]


@settings(deadline=None)
@given(layouts(), st.data())
def test_resuming_mid_epoch_gives_the_remaining_batches(layout, data):
    batcher = _batcher(*layout)
    full = [x for x, _ in batcher]
    stop = data.draw(st.integers(0, len(batcher)))
    np.testing.assert_array_equal(
        np.array([x for x, _ in batcher.iter_from(stop)]).reshape(-1), np.array(full[stop:]).ravel()
    )

    it = iter(batcher)
    for _ in range(stop):
        next(it)
    state = batcher.state_dict()
    assert state["next_batch"] == stop
    resumed = StatefulBatcher(np.arange(layout[0]), layout[1], layout[2])
    resumed.load_state_dict(json.loads(json.dumps(state)))  # as in a checkpoint
    rest = [x for x, _ in resumed]
    if stop < len(batcher):
        assert len(rest) == len(full) - stop
        for a, b in zip(rest, full[stop:]):
            np.testing.assert_array_equal(a, b)
    else:  # a finished epoch resumes into a new one
        assert len(rest) == len(full)
    assert len(list(resumed)) == len(full)  # after the resumed epoch, whole epochs again


def test_state_for_another_layout_is_refused():
    state = StatefulBatcher(np.arange(100), 4, 5).state_dict()
    with pytest.raises(ValueError, match="time_size"):
        StatefulBatcher(np.arange(100), 4, 6).load_state_dict(state)
    ranks = StatefulBatcher(np.arange(100), 4, 5, lanes=(0, 2)).state_dict()
    with pytest.raises(ValueError, match=r"lanes = \(0, 2\), this batcher has \(2, 4\)"):
        StatefulBatcher(np.arange(100), 4, 5, lanes=(2, 4)).load_state_dict(ranks)


@settings(deadline=None)
@given(data=st.data(), per_rank=st.integers(1, 4), world_size=st.integers(1, 4))
def test_rank_lane_groups_stack_into_the_global_batch(data, per_rank, world_size):
    batch_size = per_rank * world_size
    length, _, time_size = data.draw(layouts(max_batch=1, max_time=10))
    length += (batch_size - 1) * time_size  # enough for one batch of batch_size lanes
    full = _batcher(length, batch_size, time_size)
    ranks = [
        StatefulBatcher(
            np.arange(length), batch_size, time_size, lanes=lane_range(batch_size, r, world_size)
        )
        for r in range(world_size)
    ]
    np.testing.assert_array_equal(np.concatenate([r.offsets for r in ranks]), full.offsets)
    assert all(len(r) == len(full) for r in ranks)
    for k, (x, t) in enumerate(full):
        parts = [r.batch(k) for r in ranks]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), t)
    flat = np.concatenate([np.stack([x for x, _ in r]).ravel() for r in ranks])
    assert len(np.unique(flat)) == flat.size  # ranks never share an input position


@pytest.mark.parametrize("lanes", [(0, 0), (2, 1), (0, 5), (-1, 2)])
def test_bad_lanes_are_refused(lanes):
    with pytest.raises(ValueError, match="lanes"):
        StatefulBatcher(np.arange(100), 4, 5, lanes=lanes)


@pytest.mark.parametrize("lanes", [(0.5, 1.9), (0, 1, 2), 3])
def test_lanes_that_are_not_two_integers_are_refused_naming_the_form(lanes):
    with pytest.raises(ValueError, match=r"lanes must be \(start, stop\), two integers"):
        StatefulBatcher(np.arange(100), 4, 5, lanes=lanes)


@pytest.mark.parametrize("call", ["positions", "batch", "iter_from"])
def test_a_step_that_is_not_an_integer_is_refused_and_the_position_kept(call):
    batcher = StatefulBatcher(np.arange(100), 4, 5)
    next(iter(batcher))
    with pytest.raises(ValueError, match="step must be an integer, got 1.5"):
        getattr(batcher, call)(1.5)
    assert batcher.state_dict()["next_batch"] == 1
    assert batcher.batch(np.int64(1))[0].shape == (4, 5)  # NumPy ints are integers


def test_lane_range_needs_an_even_split():
    assert lane_range(8, 1, 4) == (2, 4)
    with pytest.raises(ValueError, match="evenly"):
        lane_range(6, 0, 4)
    with pytest.raises(ValueError, match="rank"):
        lane_range(8, 4, 4)
    with pytest.raises(ValueError, match="rank must be an integer, got 0.5"):
        lane_range(4, 0.5, 2)


def test_only_the_first_iteration_after_load_resumes_even_if_it_stops_early():
    """A saved position is consumed by the first iter() after load_state_dict: if that
    resumed epoch is abandoned part-way (an exception, a break), the next iter() starts a
    fresh epoch at batch 0. Caught: a _resume flag never cleared, so every later iter()
    kept continuing from wherever the last one stopped, skipping the epoch's first batches."""
    batcher = StatefulBatcher(np.arange(101), 4, 5)  # jump 25, 5 batches
    full = [x.copy() for x, _ in batcher]
    state = {**batcher.state_dict(), "next_batch": 2}
    batcher.load_state_dict(state)
    it = iter(batcher)
    np.testing.assert_array_equal(next(it)[0], full[2])  # resumed at the saved batch
    del it  # abandoned after one batch: _next is 3
    again = [x for x, _ in batcher]
    assert len(again) == len(full)
    for a, b in zip(again, full):
        np.testing.assert_array_equal(a, b)
