"""Command-line entry points: ``compvi demo`` and ``compvi fit``.

Every error a user can cause is printed as one line on stderr, in the words of the command
line, with exit code 2; set ``COMPVI_TRACEBACK=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from . import _options as options
from ._fit import add_fit_arguments

# Errors that input, options, files or a diverging run cause, as opposed to compvi's bugs.
_USER_ERRORS = (ValueError, KeyError, TypeError, OSError, FloatingPointError)


def _parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    parser = options.OneLineParser(
        prog="compvi", description="Command-line entry points: compvi demo and compvi fit."
    )
    parser.add_argument("--version", action="version", version=f"compvi {version('compvi')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,fit}")
    demo = commands.add_parser(
        "demo",
        help="simulate a perturbation screen, fit ComparativeVI, report latent recovery",
        description="Simulate a perturbation screen, fit ComparativeVI, report how well the "
        "simulated latents were recovered, and write the results to a folder.",
    )
    demo.add_argument("--out", default="compvi_demo", help="output folder (default: %(default)s)")
    demo.add_argument(
        "--n-cells", type=options.positive_int, default=4000, help="default: %(default)s"
    )
    demo.add_argument(
        "--n-genes", type=options.positive_int, default=300, help="default: %(default)s"
    )
    demo.add_argument(
        "--max-epochs", type=options.positive_int, default=100, help="default: %(default)s"
    )
    demo.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    demo.add_argument("--accelerator", default="auto", help="default: %(default)s")
    demo.add_argument("--devices", type=options.devices, default="auto", help="default: auto")
    options.add_output_options(demo)
    fit = commands.add_parser(
        "fit",
        help="fit ComparativeVI to an .h5ad or .h5mu file; write embeddings, perturbation "
        "scores, tables, figures and the model",
        description="Fit ComparativeVI to a screen and write, all or nothing: the input with "
        "both embeddings and the perturbation scores, the per-perturbation summary and the "
        "DE table (CSV), figures (PNG), and the model.",
    )
    add_fit_arguments(fit)
    return parser


def _demo(args: argparse.Namespace, say) -> None:
    from ._demo import run_demo

    table = run_demo(
        args.out,
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        max_epochs=args.max_epochs,
        seed=args.seed,
        force=args.force,
        quiet=args.quiet,
        accelerator=args.accelerator,
        devices=args.devices,
        say=say,
    )
    say("\nRecovery of the simulated latents (higher R² and MCC are better, leakage lower):")
    say(table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
    say(f"\nWrote {args.out}/screen.h5ad, embeddings.png, recovery.csv and model/.")


def _fit(args: argparse.Namespace, say) -> None:
    from ._fit import fit_file

    summary, data, written = fit_file(args, say=say)
    columns = ["n_cells", "responder_fraction", "effect_size", "top_genes"]
    say("\nPerturbations, strongest first (effect size in control standard deviations):")
    say(summary[columns].to_string(float_format=lambda v: f"{v:.2f}"))
    say(f"\nWrote {data.n_obs} cells with both embeddings and perturbation scores to:")
    for path in written:
        say(f"  {path}")


@contextlib.contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    """Silence warnings and library logging below errors while a ``--quiet`` run lasts."""
    if not quiet:
        yield
        return
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "scvi")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    # scvi-tools prints to stdout when training fails; the error itself goes to stderr.
    with (
        warnings.catch_warnings(),
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(devnull),
    ):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


@contextlib.contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """Print each warning as one line in the command line's terms, without a source path."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = options.command_line_message(str(message)) or category.__name__
        print(f"compvi {command}: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _one_line(command: str, error: BaseException) -> str:
    # KeyError's str() adds quotes around the message; use the message itself.
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    text = options.command_line_message(str(text)) or type(error).__name__
    if not isinstance(
        error, ValueError | KeyError | FileNotFoundError | FloatingPointError | MemoryError
    ):
        text = f"{type(error).__name__}: {text}"
    return f"compvi {command}: {text}"


def main(argv: list[str] | None = None) -> int:
    """Run the command named in ``argv`` (default: ``sys.argv[1:]``); return an exit code."""
    try:
        args = _parser().parse_args(argv)
    except options.CommandLineError as error:
        print(error, file=sys.stderr)
        return 2
    run = {"demo": _demo, "fit": _fit}[args.command]

    def say(text: str) -> None:
        if not args.quiet:
            print(text, flush=True)

    try:
        with _quiet(args.quiet), _warnings_as_lines(args.command):
            run(args, say)
    except (*_USER_ERRORS, MemoryError, RuntimeError) as error:
        if os.environ.get("COMPVI_TRACEBACK"):
            raise
        if isinstance(error, RuntimeError) and "out of memory" not in str(error).lower():
            raise  # compvi's or a library's bug: the traceback says where
        if isinstance(error, MemoryError | RuntimeError):
            error = MemoryError(
                f"out of memory ({' '.join(str(error).split())[:200]}); lower --batch-size, "
                "or read the counts from disk with --backed"
            )
        print(_one_line(args.command, error), file=sys.stderr)
        return 2
    return 0
