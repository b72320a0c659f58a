"""Compare the per-step training losses of runs on two backends (issue 9's check).

    python benchmarks/compare_losses.py RUN_A RUN_B [RUN_C RUN_D ...]

Each pair of run directories must hold metrics.json with `step_losses`. Exits
non-zero if any pair differs beyond rtol 1e-4 in its first 10 losses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def losses(run: str) -> np.ndarray:
    return np.asarray(json.loads((Path(run) / "metrics.json").read_text())["step_losses"][:10])


def main(runs: list[str]) -> int:
    if len(runs) % 2:
        print("give run directories in pairs", file=sys.stderr)
        return 2
    worst_status = 0
    for a, b in zip(runs[::2], runs[1::2]):
        try:
            la, lb = losses(a), losses(b)
        except (OSError, KeyError, ValueError) as err:
            print(f"{a} vs {b}: cannot read ({err})")
            worst_status = 1
            continue
        ok = la.shape == lb.shape == (10,) and np.allclose(la, lb, rtol=1e-4, atol=0)
        rel = np.max(np.abs(la - lb) / np.abs(la)) if la.shape == lb.shape else float("nan")
        print(f"{a} vs {b}: {'MATCH' if ok else 'DIFFER'} (max rel diff {rel:.2e})")
        print("  " + " ".join(f"{v:.6f}" for v in la))
        print("  " + " ".join(f"{v:.6f}" for v in lb))
        worst_status = worst_status or (0 if ok else 1)
    return worst_status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
