"""Draw how StatefulBatcher cuts one long stream into lanes and truncated-BPTT batches.

    python docs/scripts/lanes.py                    # writes docs/images/tbptt-lanes.png
    python docs/scripts/lanes.py --out /tmp/x --length 41 --batch-size 4 --time-size 3

The figure is read off the real `tinygrad_rnn.data.StatefulBatcher` (its `offsets`, `jump`
and `positions(k)`), so it shows what the library does, not what a drawing says it does.
Top: the corpus, one cell per position, coloured by the batch that reads it as an input;
brackets mark each lane's span. Bottom: the batches as (B, T) grids of corpus positions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # draw from this checkout, installed or not
from tinygrad_rnn.data import StatefulBatcher  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "docs" / "images"
BATCH_COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#edc948", "#76b7b2"]
LEFTOVER = "#d9d9d9"


def batch_of_positions(batcher: StatefulBatcher) -> np.ndarray:
    """(L,) index of the batch that reads each position as an input; -1 where none does."""
    owner = np.full(batcher.data.shape[0], -1)
    for k in range(len(batcher)):
        owner[batcher.positions(k)] = k
    return owner


def draw(path: Path, length: int, batch_size: int, time_size: int) -> StatefulBatcher:
    batcher = StatefulBatcher(np.arange(length), batch_size, time_size)
    B, T, jump, K = batcher.batch_size, batcher.time_size, batcher.jump, len(batcher)
    if K > len(BATCH_COLOURS):
        raise ValueError(f"{K} batches per epoch; the figure has colours for {len(BATCH_COLOURS)}")
    owner = batch_of_positions(batcher)

    width = max(9.0, 0.27 * length + 1.5)
    fig = Figure(figsize=(width, 5.6), dpi=110)
    FigureCanvasAgg(fig)
    fig.text(
        0.5, 0.975,
        f"StatefulBatcher: L = {length}, B = {B} lanes, T = {T} steps per batch  "
        f"(jump = (L - 1) // B = {jump}, {K} batches per epoch)",
        ha="center", va="top", fontsize=11.5, weight="bold",
    )  # fmt: skip

    # ---- top: the corpus and the lanes ------------------------------------------------
    top = fig.add_axes((0.02, 0.52, 0.96, 0.38))
    top.set_axis_off()
    top.set_xlim(-3.2, length + 0.8)
    top.set_ylim(-1.6, 2.2)
    for p in range(length):
        k = owner[p]
        colour = BATCH_COLOURS[k] if k >= 0 else LEFTOVER
        hatch = None if k >= 0 else "///"
        top.add_patch(Rectangle((p, 0), 1, 1, facecolor=colour, edgecolor="white", hatch=hatch))
        top.text(p + 0.5, 0.5, str(p), ha="center", va="center", fontsize=7,
                 color="white" if k >= 0 else "#444444")  # fmt: skip
    top.text(-0.3, 0.5, "corpus\nposition", ha="right", va="center", fontsize=8)
    for b, offset in enumerate(batcher.offsets):
        start, stop = int(offset), int(offset) + jump
        # Bracket over the lane's span [offset, offset + jump).
        top.plot([start + 0.05, start + 0.05, stop - 0.05, stop - 0.05], [1.15, 1.35, 1.35, 1.15],
                 color="#333333", linewidth=1.2)  # fmt: skip
        top.text((start + stop) / 2, 1.45, f"lane {b}: offset {start}", ha="center",
                 va="bottom", fontsize=8.5)  # fmt: skip
    tail = B * jump
    if tail < length:
        top.text((tail + length) / 2, 1.45, "tail", ha="center", va="bottom", fontsize=8.5)
    top.annotate(
        "time within a lane", xy=(jump - 0.2, -0.45), xytext=(0.2, -0.45), fontsize=8,
        va="center", arrowprops={"arrowstyle": "-|>", "color": "#666666"}, color="#666666",
    )  # fmt: skip
    per_lane = jump % T
    top.text(
        length / 2, -1.2,
        f"grey: never an input in an epoch (the last jump % T = {per_lane} of each lane, and "
        f"the tail from B * jump = {tail}); it may still be the previous step's target",
        ha="center", va="center", fontsize=8.5, color="#444444",
    )  # fmt: skip

    # ---- bottom: the batches -----------------------------------------------------------
    grid_w, gap = T, 1.6
    bottom = fig.add_axes((0.06, 0.1, 0.88, 0.36))
    bottom.set_axis_off()
    total = K * grid_w + (K - 1) * gap
    bottom.set_xlim(-1.6, total + 0.4)
    bottom.set_ylim(-1.0, B + 1.2)
    for k in range(K):
        x0 = k * (grid_w + gap)
        positions = batcher.positions(k)  # (B, T)
        for b in range(B):
            for j in range(T):
                y = B - 1 - b
                bottom.add_patch(Rectangle((x0 + j, y), 1, 1, facecolor=BATCH_COLOURS[k],
                                           edgecolor="white"))  # fmt: skip
                bottom.text(x0 + j + 0.5, y + 0.5, str(positions[b, j]), ha="center",
                            va="center", fontsize=8, color="white")  # fmt: skip
        bottom.text(x0 + grid_w / 2, B + 0.25, f"batch k = {k}: x", ha="center", va="bottom",
                    fontsize=9, weight="bold")  # fmt: skip
        if k + 1 < K:
            y = B / 2
            bottom.annotate(
                "", xy=(x0 + grid_w + gap - 0.15, y), xytext=(x0 + grid_w + 0.15, y),
                arrowprops={"arrowstyle": "-|>", "color": "#6a4c93", "linestyle": "--"},
            )  # fmt: skip
            bottom.text(x0 + grid_w + gap / 2, y + 0.25, "state\ncarried", ha="center",
                        va="bottom", fontsize=7.5, color="#6a4c93")  # fmt: skip
    for b in range(B):
        bottom.text(-0.2, B - 1 - b + 0.5, f"lane {b}", ha="right", va="center", fontsize=8)
    bottom.text(total / 2, -0.55, "targets t = x + 1 (the next position of the same stream)",
                ha="center", va="center", fontsize=8.5, color="#444444")  # fmt: skip

    handles = [Patch(facecolor=BATCH_COLOURS[k], label=f"batch k = {k}") for k in range(K)]
    handles.append(Patch(facecolor=LEFTOVER, hatch="///", label="left over"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8.5,
               frameon=False, bbox_to_anchor=(0.5, 0.0))  # fmt: skip
    # No "Software" tag: the PNG bytes then depend only on the drawing.
    fig.savefig(path, metadata={"Software": None})
    return batcher


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNG")
    parser.add_argument("--length", type=int, default=41, help="L, corpus length")
    parser.add_argument("--batch-size", type=int, default=4, help="B, number of lanes")
    parser.add_argument("--time-size", type=int, default=3, help="T, steps per batch")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "tbptt-lanes.png"
    draw(path, args.length, args.batch_size, args.time_size)
    print(path)
    return path


if __name__ == "__main__":
    main()
