"""The `tinygrad-rnn` command: a thin shell over the library.

Bad arguments exit non-zero with one clear line on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .backend import BackendUnavailableError, available_backends, use_backend


class UsageError(Exception):
    """A user mistake: reported as one line, exit status 2."""


def _cmd_backends(args: argparse.Namespace) -> int:
    for name, reason in available_backends().items():
        print(f"{name:8s} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Fit a sine with a tiny tanh network built from primitive ops (smoke test)."""
    import numpy as np

    import tinygrad_rnn as tr

    rng = np.random.default_rng(args.seed)
    x = np.linspace(-3, 3, 64, dtype=np.float32)[:, None]
    y = np.sin(x)
    w1 = tr.tensor(rng.standard_normal((1, 16)).astype(np.float32), requires_grad=True)
    b1 = tr.tensor(np.zeros(16, np.float32), requires_grad=True)
    w2 = tr.tensor((rng.standard_normal((16, 1)) / 4).astype(np.float32), requires_grad=True)
    xt, yt = tr.tensor(x), tr.tensor(y)
    params = [w1, b1, w2]
    first = None
    for step in range(args.steps):
        loss = (((xt @ w1 + b1).tanh() @ w2 - yt) ** 2).mean()
        loss.backward()
        for p in params:
            p.data -= 0.1 * p.grad
            p.grad = None
        first = loss.item() if first is None else first
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  mse {loss.item():.5f}")
    print(f"demo: mse {first:.4f} -> {loss.item():.4f} on backend {xt.backend}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinygrad-rnn", description=__doc__)
    parser.add_argument(
        "--backend", choices=["numpy", "cupy"], default=None,
        help="array backend (default: $TINYGRAD_RNN_BACKEND or numpy)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backends", help="which backends are available, and why not the others")
    p.set_defaults(func=_cmd_backends)
    p = sub.add_parser("demo", help="a quick autograd smoke test")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="unused; accepted for symmetry with train")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.backend is not None:
            use_backend(args.backend)
        return args.func(args)
    except (UsageError, BackendUnavailableError, FileNotFoundError, ValueError) as err:
        print(f"tinygrad-rnn: error: {err}".splitlines()[0], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinygrad-rnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
