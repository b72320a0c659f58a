"""The `tinygrad-rnn` command: a thin shell over `tinygrad_rnn.train`.

    tinygrad-rnn train sine
    tinygrad-rnn train ptb --max-steps 100 --out runs/ptb-smoke
    tinygrad-rnn train --resume runs/ptb-smoke
    mpirun -n 2 tinygrad-rnn train ptb --distributed
    tinygrad-rnn evaluate runs/ptb-smoke
    tinygrad-rnn generate runs/text-... --length 200 --temperature 0.8 --top-k 10
    tinygrad-rnn topologies
    tinygrad-rnn backends

Bad arguments exit with status 2 and one clear line on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from .backend import BackendUnavailableError, available_backends, use_backend
from .rundir import RunDirectory, RunDirectoryError


class UsageError(Exception):
    """A user mistake: reported as one line, exit status 2."""


def _cmd_backends(args: argparse.Namespace) -> int:
    for name, reason in available_backends().items():
        print(f"{name:8s} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def _cmd_topologies(args: argparse.Namespace) -> int:
    import topologies

    listing = topologies.available()
    width = max(len(n) for n in listing)
    for name, description in listing.items():
        aliases = topologies.get(name).aliases
        alias = f" (alias: {', '.join(aliases)})" if aliases else ""
        print(f"{name:{width}s}  {description}{alias}")
    return 0


def _options(args: argparse.Namespace):
    from .train.recipes import Options

    return Options(
        topology=args.topology, cell=args.cell, epochs=args.epochs,
        max_steps=None if args.max_steps == NO_STEP_LIMIT else args.max_steps,
        batch_size=args.batch_size, hidden_size=args.hidden_size, lr=args.lr, seed=args.seed,
        data=_absolute(args.data), checkpoint_every=args.checkpoint_every, quiet=args.quiet,
        large=args.large, reverse=args.reverse, peeky=args.peeky, attention=args.attention,
        init=args.init, embedding_std=args.embedding_std, forget_bias=args.forget_bias,
        lr_decay=args.lr_decay, clip_percentile=args.clip_percentile,
        min_padding=args.min_padding,
    )


def _absolute(path: str | None) -> str | None:
    """A user's path made absolute, so a checkpoint that stores it finds the file again
    from any working directory (evaluate, --resume)."""
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def _communicator(args: argparse.Namespace):
    """The MPI communicator for --distributed (None without it)."""
    if not args.distributed:
        return None
    try:
        from .train.distributed import MPICommunicator

        return MPICommunicator()
    except ImportError as err:
        raise UsageError(f"--distributed: {err}") from None


def _use_threads(count: int | None, ranks: int = 1) -> None:
    """Compute on `count` CPU threads, the library's own way: its pool, with BLAS on
    one thread per call. The default shares the CPUs this process may use among the
    `ranks` processes of a distributed run that run on this machine."""
    from .threads import get_num_threads, set_num_threads

    set_num_threads(max(1, get_num_threads() // ranks) if count is None else count)


def _float_arg(accept: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """argparse type: a float that `accept`s, or an error naming the value."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan  # accepted by none of the tests below
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        return value

    return parse


# `--max-steps none`: no step limit; on --resume it lifts the limit the run was started with.
NO_STEP_LIMIT = "none"


def _steps_or_none(text: str) -> int | str:
    """argparse type of --max-steps: an int >= 1, or "none"."""
    if text.strip().lower() == NO_STEP_LIMIT:
        return NO_STEP_LIMIT
    try:
        return _int_at_least(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 1 or 'none'; got {text!r}"
        ) from None


def _int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an int >= `low`, or an error naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1  # accepted by no test below
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {text!r}")
        return value

    return parse


def _cmd_train(args: argparse.Namespace) -> int:
    from . import checkpoint
    from .train.recipes import Options, check_options, check_run_extra, get_recipe

    communicator = _communicator(args)
    _use_threads(args.threads, 1 if communicator is None else communicator.local_size)
    if args.resume:
        run_dir = Path(args.resume)
        path = run_dir / "checkpoint.npz" if run_dir.is_dir() else run_dir
        if not path.exists():
            raise UsageError(f"--resume: no checkpoint at {path}")
        saved = checkpoint.read_extra(path)
        check_run_extra(path, saved)
        recipe = saved["recipe"]
        _refuse_flags_a_resume_ignores(args, recipe)
        opts = Options.from_checkpoint(saved)
        for key in ("epochs", "max_steps", "checkpoint_every"):  # a resumed run may go further
            if getattr(args, key) is not None:
                setattr(opts, key, getattr(args, key))
        if opts.max_steps == NO_STEP_LIMIT:  # lifts the smoke run's own limit
            opts.max_steps = None
        opts.quiet = args.quiet
        out = path.parent
        _refuse_overwriting_a_newer_checkpoint(path)
    else:
        if not args.recipe:
            raise UsageError("train needs a RECIPE (or --resume DIR)")
        recipe = args.recipe
        get_recipe(recipe)
        opts = _options(args)
        check_options(recipe, opts)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else Path("runs") / f"{recipe}-{stamp}"
    # Rank 0 alone claims the directory and takes its lock; every rank gets its answer,
    # a refusal included, so none waits in a collective for a rank that has left.
    holder = communicator is None or communicator.rank == 0
    run_dir: RunDirectory | None = None
    answer: tuple[str, str | None] = (str(out), None)
    if holder:
        try:
            if args.resume:
                run_dir = RunDirectory(out)
                run_dir.check_writable(f"--resume: {out} must be writable to continue the run")
            else:
                run_dir = RunDirectory.claim_new(out, given=bool(args.out))
            run_dir.lock()
            answer = (str(run_dir.path), None)
        except (RunDirectoryError, OSError) as err:
            answer = (str(out), str(err))
    if communicator is not None:  # one run directory: rank 0's
        answer = communicator.broadcast_object(answer, "the run directory")
    out = Path(answer[0])
    try:
        if answer[1] is not None:
            raise UsageError(answer[1])
        return _train_run(args, communicator, recipe, opts, out, path if args.resume else None)
    except BaseException:
        if run_dir is not None and not args.resume:  # a new run refused before it wrote
            run_dir.tidy_if_unused()
        raise
    finally:
        if run_dir is not None:
            run_dir.release()


def _train_run(args, communicator, recipe: str, opts, out: Path, resume_from: Path | None) -> int:
    """Build, (resume,) train and report a run whose directory `out` this process holds."""
    from .random import manual_seed
    from .train import Trainer
    from .train.recipes import prepare

    prepared = prepare(recipe, opts)
    manual_seed(opts.seed)
    model = prepared.topology.build(prepared.spec)
    trainer = Trainer(prepared.topology, model, prepared.config, prepared.train, prepared.valid,
                      out_dir=out, extra=prepared.extra, communicator=communicator)
    if resume_from is not None:
        trainer.resume(resume_from)
        _check_more_to_train(args, trainer)
    if trainer.rank == 0:
        layer = prepared.spec.cell if prepared.topology.recurrent else "feed-forward"
        print(f"training {recipe} ({prepared.topology!r}, {layer}) -> {out}", file=sys.stderr)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint saved in {out}; continue with "
              f"`tinygrad-rnn train --resume {out}`", file=sys.stderr)
        return 130
    if trainer.rank != 0:  # rank 0 alone measures the test split, plots and reports
        return 0
    try:
        test = prepared.report(trainer, out) if prepared.report else {}
        trainer.write_metrics(test=test)
        from .train import plots

        metric = ("perplexity" if "perplexity" in test
                  else "accuracy" if "accuracy" in test else "mse")  # fmt: skip
        plots.curves(out / "curves.png", trainer.history, metric)
    except KeyboardInterrupt:
        print(f"interrupted during the final report; the trained run is in {out}: "
              f"`tinygrad-rnn evaluate {out}` gives its test metrics", file=sys.stderr)
        return 130
    shown = {k: round(v, 5) for k, v in test.items() if isinstance(v, float)}
    print(json.dumps({"run": str(out), "test": shown, "steps": trainer.step}))
    return 0


def _refuse_overwriting_a_newer_checkpoint(path: Path) -> None:
    """--resume FILE saves into FILE's folder as checkpoint.npz: refused when that is
    another checkpoint, which the resumed run would replace."""
    from . import checkpoint

    latest = path.parent / "checkpoint.npz"
    if path.name == latest.name or not latest.exists() or latest.samefile(path):
        return
    step = checkpoint.read_extra(latest).get("step", "?")
    raise UsageError(
        f"--resume {path}: the run would save into {latest}, which holds another checkpoint "
        f"(step {step}); copy {path.name} as checkpoint.npz into a new folder and resume that"
    )


# What a resumed run may change: how far it goes, and how it reports. Everything else is
# the run's own (its checkpoint's), and a flag for it would be ignored, so it is refused.
_RESUME_FLAGS = ("epochs", "max_steps", "checkpoint_every", "quiet", "threads", "resume",
                 "distributed", "recipe", "command", "func", "backend",
                 "sub_backend")  # fmt: skip


def _refuse_flags_a_resume_ignores(args: argparse.Namespace, recipe: str) -> None:
    defaults = build_parser().parse_args(["train"])
    ignored = []
    for key, value in vars(args).items():
        if key in _RESUME_FLAGS or value == getattr(defaults, key, value):
            continue
        ignored.append("--" + key.replace("_", "-"))
    if args.recipe is not None and args.recipe != recipe:
        ignored.insert(0, f"recipe {args.recipe!r}")
    if ignored:
        raise UsageError(
            f"--resume continues a {recipe!r} run as it was set up, in its own directory; it "
            f"takes --epochs, --max-steps, --checkpoint-every, --quiet, --threads, --backend "
            f"and --distributed, not "
            f"{', '.join(ignored)}"
        )


def _check_more_to_train(args: argparse.Namespace, trainer) -> None:
    """A resumed run that would stop where its checkpoint already is would train nothing
    and only report again: most likely a mistyped or forgotten --epochs or --max-steps."""
    c = trainer.config
    if trainer.validation_pending:  # an epoch's end to finish: its validation and schedule
        return
    for flag, cap, done, unit in (
        ("--max-steps", c.max_steps, trainer.step, "step"),
        ("--epochs", c.epochs, trainer.epoch, "epoch"),
    ):
        if cap is not None and done >= cap:
            given = getattr(args, flag[2:].replace("-", "_")) is not None
            source = "" if given else " (the run's own, from its checkpoint)"
            raise UsageError(
                f"{flag} {cap}{source}: the checkpoint is at {unit} {done} already, so "
                f"nothing would train; give a {flag} above {done} to go further"
                + (" (or --max-steps none)" if flag == "--max-steps" else "")
            )
    if trainer.stopped_early:
        raise UsageError(
            "the run stopped early (its validation stopped improving), so nothing would "
            "train; start a new run to train further"
        )


def _load_run(target: str):
    """(checkpoint path, extra, prepared run, topology, model) for evaluate/generate."""
    from . import checkpoint
    from .train.recipes import Options, check_run_extra, rebuild_model

    path = Path(target)
    if path.is_dir():
        path = path / "checkpoint.npz"
    if not path.exists():
        raise UsageError(f"no checkpoint at {path}")
    extra = checkpoint.read_extra(path)
    check_run_extra(path, extra)
    topology, model = rebuild_model(extra)
    checkpoint.load(path, model, require_finite=True)
    model.eval()
    return path, extra, Options.from_checkpoint(extra), topology, model


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .train import TrainConfig, Trainer
    from .train.recipes import prepare

    _use_threads(args.threads)
    path, extra, opts, topology, model = _load_run(args.run)
    prepared = prepare(extra["recipe"], opts)
    config = TrainConfig(**{**extra["config"], "quiet": True})
    trainer = Trainer(topology, model, config, prepared.train, prepared.valid)
    split = {"test": prepared.test, "valid": prepared.valid}[args.split]
    # The test split as the run's report measured it, the valid split as its validation
    # did (its eval batch): each number matches metrics.json's.
    batch = prepared.test_batch_size if args.split == "test" else None
    result = trainer.evaluate(split, batch_size=batch)
    print(json.dumps({"checkpoint": str(path), "split": args.split, **result}))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import Vocab, word_tokens
    from .train.recipes import closed_loop, prepare

    path, extra, opts, topology, model = _load_run(args.run)
    if "vocab" in extra and hasattr(topology, "generate") and topology.stateful:
        vocab = Vocab.from_dict(extra["vocab"])
        prompt = args.prompt if args.prompt is not None else vocab.id_to_token[0]
        # As the corpus was read: a word prompt's line breaks are <eos> tokens too.
        tokens = list(prompt) if vocab.level == "char" else word_tokens(prompt)
        if not tokens:
            raise UsageError(f"--prompt {prompt!r}: give at least one token to continue")
        ids = vocab.encode(tokens)
        rng = np.random.default_rng(0 if args.seed is None else args.seed)
        temperature = 1.0 if args.temperature is None else args.temperature
        out = topology.generate(model, ids, args.length, temperature=temperature,
                                top_k=args.top_k, generator=rng)
        sep = "" if vocab.level == "char" else " "
        text = sep.join(tokens) + sep + vocab.decode(out)
        print(text.replace(" <eos> ", "\n").replace("<eos>", "\n"))
        return 0
    if extra["recipe"] == "sine":
        sampling = [flag for flag, value in (("--prompt", args.prompt),
                                             ("--temperature", args.temperature),
                                             ("--top-k", args.top_k), ("--seed", args.seed))
                    if value is not None]  # fmt: skip
        if sampling:
            raise UsageError(f"{', '.join(sampling)}: a series continues deterministically "
                             f"from its test window; these flags are for language models")
        prepared = prepare("sine", opts)
        window = prepared.test[0][0]
        values = closed_loop(topology, model, window, args.length)
        # float64 before rounding, so the JSON shows 0.0244 rather than float32 noise
        print(json.dumps({"seed_window": window[:, 0].astype(float).round(4).tolist(),
                          "continuation": values.astype(float).round(4).tolist()}))
        return 0
    raise UsageError(f"generate works on language-model and series checkpoints; "
                     f"{path} is a {extra['recipe']!r} run")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (no usage block): `PROG: error: MESSAGE`.
    `--help` still prints the full usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_int_at_least(1), metavar="N",
                        help="CPU threads (default: all this process may use, at most the "
                             "first of $TINYGRAD_RNN_NUM_THREADS, $OMP_NUM_THREADS, "
                             "$OPENBLAS_NUM_THREADS that is set); results differ in rounding "
                             "by count")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="tinygrad-rnn", description="Train and use recurrent networks (RNN, LSTM, GRU).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__,
    )
    parser.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                        help="array backend (default: $TINYGRAD_RNN_BACKEND or numpy)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train",
                       help="train a recipe: sine, waves, wavegen, ptb, text, addition, date")
    p.add_argument("recipe", nargs="?", help="recipe name (omit with --resume)")
    p.add_argument("--topology", help="topology name (see `tinygrad-rnn topologies`)")
    p.add_argument("--cell", choices=["rnn", "rnn_relu", "lstm", "gru"],
                   help="recurrent cell; rnn is the tanh Elman RNN, rnn_relu the relu one")
    p.add_argument("--backend", dest="sub_backend", choices=["numpy", "cupy"])
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=_steps_or_none, metavar="N",
                   help="stop after N optimizer steps (smoke runs); 'none': no limit (with "
                        "--resume, lifts the run's own)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=_int_at_least(0), default=0, metavar="S")
    p.add_argument("--data", help="data file or folder (default: $TINYGRAD_RNN_DATA/...)")
    p.add_argument("--out", help="run directory (default: runs/RECIPE-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN",
                   help="continue a run: its directory (its checkpoint.npz) or a checkpoint "
                        "file; the run saves into that folder as checkpoint.npz")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS")
    p.add_argument("--quiet", action="store_true",
                   help="no progress output (the one line naming the run directory stays)")
    _add_threads(p)
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI ranks: mpirun -n P tinygrad-rnn train ... "
                        "--distributed (--batch-size is per rank)")
    p.add_argument("--large", action="store_true", help="ptb: 2x650 LSTM, dropout 0.5, tied")
    p.add_argument("--reverse", action=argparse.BooleanOptionalAction, default=None,
                   help="seq2seq: reverse the input sequence")
    p.add_argument("--peeky", action="store_true", help="seq2seq: peeky decoder")
    p.add_argument("--attention", action="store_true", help="seq2seq: attention decoder")
    p.add_argument("--lr-decay", metavar="K",
                   type=_float_arg(lambda v: 1 <= v < math.inf, "a number >= 1"),
                   help="divide the lr by K whenever validation stops improving; 1 keeps it "
                        "constant (default: the recipe's)")
    p.add_argument("--clip-percentile", metavar="P",
                   type=_float_arg(lambda v: 0 < v <= 100, "a number in (0, 100]"),
                   help="clip each step's gradient norm to the P-th percentile of the norms "
                        "seen so far (AutoClip); the recipe's clip stays an upper bound")
    p.add_argument("--min-padding", metavar="N", type=_int_at_least(0),
                   help="seq2seq: spaces after every question, the longest included "
                        "(default: the recipe's; date: 1, addition: 0)")
    p.add_argument("--init", choices=("textbook", "pytorch"),
                   help="weight init (default: the recipe's; textbook for ptb (pytorch with "
                        "--large), addition, date)")
    p.add_argument("--embedding-std", metavar="STD",
                   type=_float_arg(lambda v: 0 < v < math.inf, "a number > 0"),
                   help="embeddings start N(0, STD^2) (default: the init's, textbook 0.01, "
                        "pytorch 1; date: 1)")
    p.add_argument("--forget-bias", metavar="B", type=_float_arg(math.isfinite, "a finite number"),
                   help="LSTM: every forget gate's bias starts at B (default: the init's)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate",
                       help="evaluate a run's checkpoint on its test split (or --split valid)")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--split", choices=["test", "valid"], default="test",
                   help="test: as the final report measured it; valid: as the run's validation")
    p.add_argument("--backend", dest="sub_backend", choices=["numpy", "cupy"])
    _add_threads(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("generate", help="sample text from an LM, or continue a series")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--length", type=_int_at_least(1), default=100, metavar="N",
                   help="tokens (or series values) to generate (default 100)")
    p.add_argument("--temperature", metavar="T",
                   type=_float_arg(lambda v: 0 <= v < math.inf, "a finite number >= 0"),
                   help="LMs: sample from softmax(logits / T); 0 takes the most likely "
                        "(default 1)")
    p.add_argument("--top-k", type=_int_at_least(1), metavar="K",
                   help="LMs: sample among the K most likely tokens only (and any tied "
                        "with the K-th)")
    p.add_argument("--prompt", help="LMs: the text to continue (default: the vocabulary's "
                                     "token 0: <unk> for ptb, a newline for text)")
    p.add_argument("--seed", type=_int_at_least(0), metavar="S",
                   help="LMs: the sampling seed (default 0)")
    p.add_argument("--backend", dest="sub_backend", choices=["numpy", "cupy"])
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("topologies", help="list the registered topologies")
    p.set_defaults(func=_cmd_topologies)
    p = sub.add_parser("backends", help="which backends are available, and why not the others")
    p.set_defaults(func=_cmd_backends)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        backend = getattr(args, "sub_backend", None) or args.backend
        if backend is not None:
            use_backend(backend)
        return args.func(args)
    except (UsageError, BackendUnavailableError, FileNotFoundError, ValueError, KeyError) as err:
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        print(f"tinygrad-rnn: error: {message}".splitlines()[0], file=sys.stderr)
        return 2
    except RuntimeError as err:
        from .train import TrainingDivergedError

        if not isinstance(err, TrainingDivergedError):
            raise
        print(f"tinygrad-rnn: diverged: {err}".splitlines()[0], file=sys.stderr)
        return 1
    except OSError as err:  # a full disk, a folder gone: one line, and what is kept
        print(f"tinygrad-rnn: error: {err}".splitlines()[0], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
