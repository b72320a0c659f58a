"""Progress reporting: a tqdm bar on a terminal, plain lines elsewhere, nothing when quiet."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """One epoch's progress: loss and throughput (items/s, items = tokens or samples).

    On a TTY it draws a tqdm bar. Off a TTY (CI logs, files) it prints a plain
    line about every tenth of the epoch, so the log stays readable.
    """

    def __init__(
        self,
        total: int,
        description: str,
        unit: str,
        quiet: bool = False,
        stream: TextIO | None = None,
        done: int = 0,
    ):
        """`done`: steps of the epoch already trained (a resumed epoch starts there)."""
        self.total = max(int(total), 1)
        self.description = description
        self.unit = unit
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.done = int(done)
        self.items = 0
        self.start = time.perf_counter()
        self._bar: Any = None
        step = max(self.total // 10, 1)
        self._next_line = (self.done // step + 1) * step
        if not quiet and getattr(self.stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=self.done,
                desc=description,
                unit="step",
                file=self.stream,
                leave=True,
                dynamic_ncols=True,
            )

    @property
    def rate(self) -> float:
        """Items per second so far."""
        return self.items / max(time.perf_counter() - self.start, 1e-9)

    def update(self, loss: float, items: int) -> None:
        self.done += 1
        self.items += items
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(
                f"loss={loss:.4f} {self.rate:,.0f} {self.unit}/s", refresh=False
            )
            self._bar.update(1)
        elif self.done >= self._next_line or self.done == self.total:
            self._next_line += max(self.total // 10, 1)
            print(
                f"{self.description}: step {self.done}/{self.total} loss {loss:.4f} "
                f"{self.rate:,.0f} {self.unit}/s",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def log(self, message: str) -> None:
        """A line that does not break the bar."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)
