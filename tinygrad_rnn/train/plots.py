"""PNG plots of a run, drawn on matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..checkpoint import write_atomically


def _save(fig: Figure, path: str | Path) -> Path:
    """The figure at `path` (its format from the suffix, PNG without one), written whole
    or not at all (an interrupted or failed save left a broken file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    kind = path.suffix[1:].lower() or "png"  # as savefig would pick from the name
    write_atomically(path, lambda file: fig.savefig(file, format=kind, dpi=110,
                                                    bbox_inches="tight"))  # fmt: skip
    return path


def one_record_per_epoch(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each epoch, in epoch order: a run stopped mid-epoch (max_steps,
    Ctrl-C) and resumed records that epoch twice, the partial record first."""
    latest = {h["epoch"]: h for h in history}
    return [latest[epoch] for epoch in sorted(latest)]


def curves(path: str | Path, history: list[dict[str, Any]], metric: str) -> Path:
    """Training loss per epoch, and the validation `metric` when it was measured."""
    history = one_record_per_epoch(history)
    fig = Figure(figsize=(9, 3.6))
    ax_loss, ax_metric = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if history and "valid_loss" in history[0]:
        ax_loss.plot(epochs, [h["valid_loss"] for h in history], "s--", label="valid")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    key = f"valid_{metric}"
    if history and key in history[0]:
        ax_metric.plot(epochs, [h[key] for h in history], "o-", color="tab:green")
        ax_metric.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    else:
        ax_metric.set_axis_off()
    for ax in (ax_loss, ax_metric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def series_prediction(
    path: str | Path,
    truth: np.ndarray,
    clean: np.ndarray,
    predicted: np.ndarray,
    continuation: np.ndarray,
    continuation_truth: np.ndarray,
) -> Path:
    """Next-step predictions against the truth, and a closed-loop continuation."""
    fig = Figure(figsize=(10, 6))
    top, bottom = fig.subplots(2, 1)
    steps = np.arange(len(truth))
    top.plot(steps, truth, ".", ms=3, color="0.6", label="noisy target")
    top.plot(steps, clean, "-", lw=1, color="k", label="clean signal")
    top.plot(steps, predicted, "-", lw=1.4, color="tab:red", label="next-step prediction")
    top.set(title="next-step prediction on the test split", xlabel="step")
    top.legend(loc="upper right", fontsize=8)
    steps = np.arange(len(continuation))
    bottom.plot(steps, continuation_truth, "-", color="k", lw=1, label="clean signal")
    bottom.plot(steps, continuation, "-", color="tab:blue", lw=1.4, label="closed loop")
    bottom.set(title="closed-loop continuation (predictions fed back as inputs)", xlabel="step")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def generated_waves(
    path: str | Path, truth: np.ndarray, generated: np.ndarray, names: list[str]
) -> Path:
    """Generated waveforms (one-to-many) against the true ones."""
    fig = Figure(figsize=(10, 2.4 * len(truth)))
    axes = np.atleast_1d(fig.subplots(len(truth), 1))
    for ax, t, g, name in zip(axes, truth, generated, names):
        ax.plot(t, "k-", lw=1, label="truth")
        ax.plot(g, "-", color="tab:orange", lw=1.4, label="generated")
        ax.set_title(name, fontsize=9)
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def examples(path: str | Path, rows: list[dict[str, str]]) -> Path:
    """A table of example decodes: question, expected answer, prediction."""
    fig = Figure(figsize=(8, 0.4 * (len(rows) + 2)))
    ax = fig.subplots()
    ax.set_axis_off()
    cells = [
        [
            r["question"].strip(),
            r["answer"].strip(),
            r["predicted"].strip(),
            "ok" if r["answer"] == r["predicted"] else "x",
        ]
        for r in rows
    ]
    table = ax.table(
        cellText=cells,
        colLabels=["question", "answer", "predicted", ""],
        loc="center",
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    return _save(fig, path)
