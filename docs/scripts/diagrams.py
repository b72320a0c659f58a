"""Draw the five topology diagrams of the guide into PNG files.

    python docs/scripts/diagrams.py                 # writes docs/images/topology-*.png
    python docs/scripts/diagrams.py --out /tmp/x    # anywhere else

Each diagram shows inputs (bottom row), recurrent cells (middle row, time runs left to
right) and outputs (top row). Outputs that the loss scores are filled; the others are drawn
hollow or left out. Pure matplotlib on the Agg canvas: no pyplot, no display needed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "images"

# Grid of the drawing: one column per time step, three rows.
STEP = 1.5  # horizontal distance between steps
ROW = {"input": 0.0, "cell": 1.35, "output": 2.7}
BOX_W, BOX_H = 1.0, 0.62

STYLES = {
    "input": {"facecolor": "#dbe9f6", "edgecolor": "#3b6ea5"},
    "condition": {"facecolor": "#e8ddf3", "edgecolor": "#6a4c93"},
    "cell": {"facecolor": "#fdebc8", "edgecolor": "#c07a00"},
    "encoder": {"facecolor": "#f6d5c5", "edgecolor": "#b5532a"},
    "decoder": {"facecolor": "#fdebc8", "edgecolor": "#c07a00"},
    "dense": {"facecolor": "#eeeeee", "edgecolor": "#555555"},
    "scored": {"facecolor": "#bfe5bf", "edgecolor": "#1f7a1f", "linewidth": 2.2},
    "unscored": {"facecolor": "white", "edgecolor": "#999999", "linestyle": "--"},
}

LEGEND = {
    "input": "input",
    "condition": "conditioning vector",
    "cell": "recurrent cell",
    "encoder": "encoder cell",
    "decoder": "decoder cell",
    "dense": "feed-forward layer",
    "scored": "output scored by the loss",
    "unscored": "output not scored",
}


class Canvas:
    """One diagram: boxes and arrows on data coordinates, then saved as a PNG."""

    def __init__(self, steps: float, title: str, subtitle: str) -> None:
        self.fig = Figure(figsize=(1.3 + 1.05 * steps, 3.9), dpi=110)
        FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_axes((0.02, 0.16, 0.96, 0.68))
        self.ax.set_axis_off()
        self.fig.text(0.5, 0.955, title, ha="center", va="top", fontsize=13, weight="bold")
        self.fig.text(0.5, 0.885, subtitle, ha="center", va="top", fontsize=9.5, color="#333")
        self.kinds: list[str] = []

    def box(self, x: float, row: str | float, label: str, kind: str, width: float = BOX_W) -> None:
        y = ROW[row] if isinstance(row, str) else row
        style = {"linewidth": 1.3, **STYLES[kind]}
        patch = FancyBboxPatch(
            (x - width / 2, y - BOX_H / 2), width, BOX_H,
            boxstyle="round,pad=0.02,rounding_size=0.12", **style,
        )  # fmt: skip
        self.ax.add_patch(patch)
        self.ax.text(x, y, label, ha="center", va="center", fontsize=11)
        if kind not in self.kinds:
            self.kinds.append(kind)

    def arrow(
        self,
        start: tuple[float, float],
        end: tuple[float, float],
        dashed: bool = False,
        color: str = "#333333",
        label: str | None = None,
    ) -> None:
        patch = FancyArrowPatch(
            start, end, arrowstyle="-|>", mutation_scale=13, color=color, linewidth=1.3,
            linestyle="--" if dashed else "-", shrinkA=0, shrinkB=0,
        )  # fmt: skip
        self.ax.add_patch(patch)
        if label:
            mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.17)
            self.ax.text(*mid, label, ha="center", va="bottom", fontsize=8.5, color=color)

    def up(self, x: float, low: str, high: str) -> None:
        """Vertical arrow from the box in row `low` to the box in row `high` at column x."""
        self.arrow((x, ROW[low] + BOX_H / 2), (x, ROW[high] - BOX_H / 2))

    def right(self, x0: float, x1: float, row: str = "cell", **kwargs) -> None:
        """Horizontal arrow between the boxes at columns x0 < x1: the state moving in time."""
        y = ROW[row]
        self.arrow((x0 + BOX_W / 2, y), (x1 - BOX_W / 2, y), **kwargs)

    def time_axis(self, x0: float, x1: float) -> None:
        y = ROW["input"] - 0.62
        self.arrow((x0, y), (x1, y), color="#777777")
        self.ax.text(x1, y - 0.12, "time", ha="right", va="top", fontsize=9, color="#777777")

    def save(self, path: Path, xlim: tuple[float, float]) -> None:
        self.ax.set_xlim(*xlim)
        self.ax.set_ylim(ROW["input"] - 0.95, ROW["output"] + 0.45)
        handles = [Patch(label=LEGEND[k], **{**STYLES[k], "linewidth": 1.3}) for k in self.kinds]
        self.fig.legend(
            handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8.5,
            frameon=False, bbox_to_anchor=(0.5, 0.0),
        )  # fmt: skip
        # No "Software" tag: the PNG bytes then depend only on the drawing.
        self.fig.savefig(path, metadata={"Software": None})


def sub(name: str, index: int | str) -> str:
    """Math-text label such as x_3."""
    return f"${name}_{{{index}}}$"


def one_to_one(path: Path) -> None:
    steps = 4
    c = Canvas(steps, "one-to-one", "no recurrence: the whole window feeds one layer")
    xs = [i * STEP for i in range(steps)]
    middle = (xs[0] + xs[-1]) / 2
    for i, x in enumerate(xs, start=1):
        c.box(x, "input", sub("x", i), "input")
        # Arrows converge on the dense box: every step of the window feeds it at once.
        target = (middle + (x - middle) * 0.5, ROW["cell"] - BOX_H / 2)
        c.arrow((x, ROW["input"] + BOX_H / 2), target)
    c.box(middle, "cell", "Linear + tanh", "dense", width=STEP * (steps - 1) * 0.6)
    c.up(middle, "cell", "output")
    c.box(middle, "output", r"$\hat{y}$", "scored")
    c.save(path, (xs[0] - 0.9, xs[-1] + 0.9))


def one_to_many(path: Path) -> None:
    steps = 4
    c = Canvas(steps + 1, "one-to-many", "one vector sets the state and joins every step")
    xs = [(i + 1) * STEP for i in range(steps)]
    c.box(0.0, "cell", "$p$", "condition")
    c.right(0.0, xs[0], label="$h_0$")
    previous = ["0", *(sub("y", i) for i in range(1, steps))]
    for i, x in enumerate(xs, start=1):
        c.box(x, "input", f"{previous[i - 1]}, $p$", "input")
        c.up(x, "input", "cell")
        c.box(x, "cell", "RNN", "cell")
        c.up(x, "cell", "output")
        c.box(x, "output", sub("y", i), "scored")
        if i > 1:
            c.right(xs[i - 2], x)
    c.time_axis(xs[0] - 0.5, xs[-1] + 0.5)
    c.save(path, (-0.7, xs[-1] + 0.9))


def many_to_one(path: Path) -> None:
    steps = 5
    c = Canvas(steps, "many-to-one", "read the whole sequence, score the last step")
    xs = [i * STEP for i in range(steps)]
    for i, x in enumerate(xs, start=1):
        c.box(x, "input", sub("x", i), "input")
        c.up(x, "input", "cell")
        c.box(x, "cell", "RNN", "cell")
        if i > 1:
            c.right(xs[i - 2], x)
        c.up(x, "cell", "output")
        if i < steps:
            # The earlier steps have outputs too; the loss just never looks at them.
            c.box(x, "output", sub("h", i), "unscored")
    c.box(xs[-1], "output", r"$\hat{y}$", "scored")
    c.time_axis(xs[0] - 0.5, xs[-1] + 0.5)
    c.save(path, (xs[0] - 0.9, xs[-1] + 0.9))


def seq2seq(path: Path) -> None:
    enc, dec = 4, 4
    c = Canvas(enc + dec, "many-to-many (seq2seq)", "an encoder reads the question, a decoder "
               "writes the answer; lengths may differ")  # fmt: skip
    xe = [i * STEP for i in range(enc)]
    xd = [(enc + i) * STEP + 0.3 for i in range(dec)]
    for i, x in enumerate(xe, start=1):
        c.box(x, "input", sub("x", i), "input")
        c.up(x, "input", "cell")
        c.box(x, "cell", "enc", "encoder")
        if i > 1:
            c.right(xe[i - 2], x)
    c.right(xe[-1], xd[0], label="state")
    decoder_inputs = ["_", *(sub("y", i) for i in range(1, dec))]
    for i, x in enumerate(xd, start=1):
        c.box(x, "input", decoder_inputs[i - 1], "input")
        c.up(x, "input", "cell")
        c.box(x, "cell", "dec", "decoder")
        c.up(x, "cell", "output")
        c.box(x, "output", sub("y", i), "scored")
        if i > 1:
            c.right(xd[i - 2], x)
    c.time_axis(xe[0] - 0.5, xd[-1] + 0.5)
    c.save(path, (xe[0] - 0.9, xd[-1] + 0.9))


def synced(path: Path) -> None:
    steps = 5
    c = Canvas(steps + 1.7, "many-to-many (synced)", "one scored output per input step; "
               "the state may be carried to the next batch")  # fmt: skip
    xs = [(i + 0.9) * STEP for i in range(steps)]
    for i, x in enumerate(xs, start=1):
        c.box(x, "input", sub("x", i), "input")
        c.up(x, "input", "cell")
        c.box(x, "cell", "RNN", "cell")
        c.up(x, "cell", "output")
        c.box(x, "output", sub("x", i + 1), "scored")
        if i > 1:
            c.right(xs[i - 2], x)
    y = ROW["cell"]
    c.arrow((0.0, y), (xs[0] - BOX_W / 2, y), dashed=True, color="#6a4c93", label="carried in")
    end = xs[-1] + BOX_W / 2
    c.arrow((end, y), (end + 1.05, y), dashed=True, color="#6a4c93", label="carried out")
    c.time_axis(xs[0] - 0.5, xs[-1] + 0.5)
    c.save(path, (-0.2, end + 1.2))


DIAGRAMS: dict[str, Callable[[Path], None]] = {
    "one-to-one": one_to_one,
    "one-to-many": one_to_many,
    "many-to-one": many_to_one,
    "many-to-many-seq2seq": seq2seq,
    "many-to-many-synced": synced,
}


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in DIAGRAMS.items():
        path = args.out / f"topology-{name}.png"
        draw(path)
        written.append(path)
        print(path)
    return written


if __name__ == "__main__":
    main()
