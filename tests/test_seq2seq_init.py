"""How a seq2seq model is initialised: `ModelSpec.init` is honoured, as in RecurrentModel.

"textbook" is the recipe of "Deep Learning from Scratch 2" (ch. 7-8): embeddings randn/100,
every matrix randn/sqrt(fan_in), every bias zero. "pytorch" keeps the layers' defaults.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import shared_data_path, to_host

import tinygrad_rnn as tr
import topologies

H, E, V = 64, 16, 40


def build(init: str, embedding_std: float | None = None, forget_bias=None, **options):
    spec = topologies.ModelSpec(
        cell="lstm",
        hidden_size=H,
        vocab_size=V,
        embedding_size=E,
        output_size=V,
        head="probabilities",
        init=init,
        embedding_std=embedding_std,
        forget_bias=forget_bias,
    )
    tr.random.manual_seed(0)
    return topologies.create("seq2seq", **options).build(spec)


def std(param) -> float:
    return float(np.std(to_host(param)))


@pytest.mark.parametrize(
    "options, head_fan_in",
    [({}, H), ({"attention": True}, 2 * H), ({"peeky": True, "attention": True}, 3 * H)],
    ids=["plain", "attention", "peeky-attention"],
)
def test_textbook_init_scales_every_parameter_as_the_textbook(options, head_fan_in):
    model = build("textbook", **options)
    decoder_input = E + (H if options.get("peeky") else 0)
    expected = {
        "enc_embedding.weight": 0.01,
        "dec_embedding.weight": 0.01,
        "encoder.weight_ih_l0": 1 / math.sqrt(E),
        "encoder.weight_hh_l0": 1 / math.sqrt(H),
        "decoder.weight_ih_l0": 1 / math.sqrt(decoder_input),
        "decoder.weight_hh_l0": 1 / math.sqrt(H),
        "head.linear.weight": 1 / math.sqrt(head_fan_in),
    }
    params = dict(model.named_parameters())
    for name, scale in expected.items():
        assert std(params[name]) == pytest.approx(scale, rel=0.1), name
    for name in (
        "encoder.bias_ih_l0",
        "encoder.bias_hh_l0",
        "decoder.bias_ih_l0",
        "decoder.bias_hh_l0",
        "head.linear.bias",
    ):
        assert not np.any(to_host(params[name])), name


def test_pytorch_init_keeps_the_layer_defaults():
    params = dict(build("pytorch", attention=True).named_parameters())
    bound = 1 / math.sqrt(H)
    assert std(params["enc_embedding.weight"]) == pytest.approx(1.0, rel=0.1)
    assert np.abs(to_host(params["encoder.weight_hh_l0"])).max() <= bound
    assert std(params["encoder.weight_hh_l0"]) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert np.any(to_host(params["decoder.bias_ih_l0"]))


def test_the_init_is_drawn_from_the_seed():
    first = [to_host(p) for p in build("textbook", attention=True).parameters()]
    second = [to_host(p) for p in build("textbook", attention=True).parameters()]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_embedding_std_rescales_only_the_embeddings_of_the_textbook_init():
    textbook = dict(build("textbook", attention=True).named_parameters())
    unit = dict(build("textbook", embedding_std=1.0, attention=True).named_parameters())
    for name, param in unit.items():
        if name.endswith("embedding.weight"):  # the same draws, 100 times the textbook's scale
            np.testing.assert_allclose(to_host(param), 100 * to_host(textbook[name]), rtol=1e-5)
            assert std(param) == pytest.approx(1.0, rel=0.1), name
        else:
            np.testing.assert_array_equal(to_host(param), to_host(textbook[name]), err_msg=name)


def test_embedding_std_redraws_the_embeddings_of_the_pytorch_init():
    params = dict(build("pytorch", embedding_std=0.25, attention=True).named_parameters())
    for name in ("enc_embedding.weight", "dec_embedding.weight"):
        assert std(params[name]) == pytest.approx(0.25, rel=0.1), name
    bound = 1 / math.sqrt(H)  # the rest keeps the layers' defaults
    assert np.abs(to_host(params["encoder.weight_hh_l0"])).max() <= bound


def test_forget_bias_starts_both_lstms_forget_gates_there_and_leaves_the_rest():
    plain = dict(build("textbook", attention=True).named_parameters())
    params = dict(build("textbook", forget_bias=1.0, attention=True).named_parameters())
    for name, param in params.items():
        value = to_host(param)
        if name in ("encoder.bias_ih_l0", "decoder.bias_ih_l0"):
            np.testing.assert_array_equal(value[H : 2 * H], 1.0)
            value = np.delete(value, np.s_[H : 2 * H])
            assert not value.any(), name
        else:
            np.testing.assert_array_equal(value, to_host(plain[name]), err_msg=name)


@pytest.mark.parametrize(
    "field, value",
    [
        ("init", "xavier"),
        ("embedding_std", 0.0),
        ("embedding_std", -1.0),
        ("forget_bias", math.nan),
        ("forget_bias", math.inf),
    ],
)
def test_a_bad_init_setting_is_refused_naming_it(field, value):
    with pytest.raises(ValueError, match=rf"{field} must be .*got {value!r}"):
        topologies.ModelSpec(vocab_size=V, output_size=V, **{field: value})


def test_forget_bias_is_refused_for_a_cell_without_a_forget_gate():
    with pytest.raises(ValueError, match="forget_bias needs cell='lstm'.*got cell='gru'"):
        topologies.ModelSpec(cell="gru", vocab_size=V, output_size=V, forget_bias=1.0)


# date starts its embeddings at N(0, 1): with the textbook's randn/100 the loss sat near 1.0
# for ~600 steps and 99.9% by epoch 3 held for 4 seeds of 8 (README, "Results").
@pytest.mark.parametrize("name, embedding_std", [("date", 1.0), ("addition", 0.01)])
def test_the_seq2seq_recipes_build_textbook_initialised_models(name, embedding_std):
    from tinygrad_rnn.train.recipes import Options, prepare

    prepared = prepare(
        name, Options(attention=True, data=shared_data_path("seq2seq", f"{name}.txt"))
    )
    model = prepared.topology.build(prepared.spec)
    params = dict(model.named_parameters())
    assert std(params["enc_embedding.weight"]) == pytest.approx(embedding_std, rel=0.2)
    hidden = prepared.spec.hidden_size
    assert std(params["encoder.weight_hh_l0"]) == pytest.approx(1 / math.sqrt(hidden), rel=0.1)
    assert not np.any(to_host(params["decoder.bias_hh_l0"]))


@pytest.mark.parametrize("name, width", [("date", 30), ("addition", 7)])
def test_date_pads_every_question_and_min_padding_overrides_it(name, width):
    """date's longest questions (29 characters) get a space too, so that reversed, every
    question starts with padding; addition keeps the textbook's widths."""
    from tinygrad_rnn.train.recipes import Options, prepare

    data = shared_data_path("seq2seq", f"{name}.txt")
    prepared = prepare(name, Options(data=data))
    assert prepared.train[0].shape[1] == prepared.test[0].shape[1] == width
    space = prepared.extra["vocab"]["tokens"].index(" ")
    first = prepared.train[0][:, 0]  # the encoder's first input (date's input is reversed)
    assert (first == space).all() == (name == "date")
    textbook = prepare(name, Options(data=data, min_padding=0))
    assert textbook.train[0].shape[1] == width - (name == "date")


def test_a_date_checkpoint_is_rebuilt_on_the_layout_its_run_trained_on():
    """A checkpoint keeps the resolved data layout, so a later change of the recipe's
    default does not change what it is evaluated on; one written before the layout was
    stored (and before `min_padding` existed) rebuilds its unpadded questions."""
    from tinygrad_rnn.train.recipes import Options, prepare

    data = shared_data_path("seq2seq", "date.txt")
    extra = prepare("date", Options(data=data)).extra
    assert extra["data_layout"] == {"reverse": True, "min_padding": 1}
    assert extra["options"]["min_padding"] is None  # the user's option: "the default"
    assert prepare("date", Options.from_checkpoint(extra)).test[0].shape[1] == 30
    # Were the default to change, the stored layout still holds: rebuilt as trained.
    extra["data_layout"] = {"reverse": False, "min_padding": 3}
    rebuilt = prepare("date", Options.from_checkpoint(extra))
    assert rebuilt.test[0].shape[1] == 32 and rebuilt.extra["data_layout"]["reverse"] is False

    # Written after min_padding came (date padded one space), before the layout was kept.
    older = {"options": Options(data=data).to_dict(), "reverse_input": True}
    assert prepare("date", Options.from_checkpoint(older)).test[0].shape[1] == 30
    # Written before min_padding existed: nothing was padded.
    oldest = {"options": Options(data=data).to_dict(), "reverse_input": True}
    del oldest["options"]["min_padding"]
    rebuilt = prepare("date", Options.from_checkpoint(oldest))
    assert rebuilt.test[0].shape[1] == 29 and rebuilt.extra["data_layout"]["reverse"] is True


@pytest.mark.parametrize("name, percentile", [("date", 10.0), ("addition", None)])
def test_the_seq2seq_recipes_halve_adams_lr_when_validation_stalls(name, percentile):
    from tinygrad_rnn.train.recipes import Options, prepare

    data = shared_data_path("seq2seq", f"{name}.txt")
    config = prepare(name, Options(data=data)).config
    assert (config.optimizer, config.lr, config.clip, config.lr_decay) == ("adam", 1e-3, 5.0, 2.0)
    assert prepare(name, Options(data=data, lr_decay=1)).config.lr_decay is None  # constant
    # date clips each step to the 10th percentile of the norms so far (AutoClip), under 5.0
    assert config.clip_percentile == percentile
    assert prepare(name, Options(data=data, clip_percentile=100)).config.clip_percentile == 100


def test_the_seq2seq_validation_rows_are_held_out_of_training_and_the_seed_reaches_the_run():
    from tinygrad_rnn.train.recipes import Options, prepare

    prepared = prepare("addition", Options(data=shared_data_path("seq2seq", "addition.txt"),
                                           seed=7))  # fmt: skip
    assert len(prepared.train[0]) + len(prepared.valid[0]) == 45_000  # the training split
    assert len(prepared.valid[0]) == 1000 and prepared.config.seed == 7
