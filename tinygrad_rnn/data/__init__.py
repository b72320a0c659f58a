"""Data layer: windows, loaders, the stateful truncated-BPTT batcher, corpora, synthetic series.

Needs only numpy (pooch only for downloads). Randomness always comes from a ``seed`` or a
``numpy.random.Generator`` argument, never from numpy's global RNG.

Two dataset styles:

- stateless: ``split_series`` then ``sliding_windows`` give independent (window, next steps)
  samples; ``DataLoader`` shuffles them each epoch; the hidden state starts fresh per batch.
- stateful: ``StatefulBatcher`` reads one long stream in B lanes, in time order, so the hidden
  state is carried across batches (reset where ``epoch_start`` is True); never shuffled.
"""

from .corpora import EOS, PTB_SHA256, PTB_URL, PTB_URL_ENV, Corpus, load_ptb, load_text, word_tokens
from .download import DataChecksumError, default_cache_dir, fetch
from .files import DATA_ENV, DataNotFoundError, data_root
from .loader import DataLoader
from .seq2seq import SEQ2SEQ_SETS, START, Seq2SeqData, load_seq2seq, read_pairs
from .stateful import StatefulBatcher, check_not_shuffled, lane_range
from .synthetic import (
    GENERATION_PARAMS,
    WAVE_NAMES,
    noisy_sine,
    wave,
    waveforms_classification,
    waveforms_generation,
)
from .vocab import Vocab
from .windows import sliding_windows, split_series

__all__ = [
    "DATA_ENV",
    "EOS",
    "GENERATION_PARAMS",
    "PTB_SHA256",
    "PTB_URL",
    "PTB_URL_ENV",
    "SEQ2SEQ_SETS",
    "START",
    "WAVE_NAMES",
    "Corpus",
    "DataChecksumError",
    "DataLoader",
    "DataNotFoundError",
    "Seq2SeqData",
    "StatefulBatcher",
    "Vocab",
    "check_not_shuffled",
    "data_root",
    "default_cache_dir",
    "fetch",
    "lane_range",
    "load_ptb",
    "load_seq2seq",
    "load_text",
    "noisy_sine",
    "read_pairs",
    "sliding_windows",
    "split_series",
    "wave",
    "waveforms_classification",
    "waveforms_generation",
    "word_tokens",
]
