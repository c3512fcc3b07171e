"""Command-line options of ``compvi fit`` and ``compvi demo``, and one-line error messages.

Defaults are read from the signatures of :class:`~compvi.ComparativeVI` and its ``train``,
so the command line cannot drift from the Python API. Every error a user can cause ends
in one line on stderr, with exit code 2, in the words of the command line: a message of
the Python API that names ``layer='counts'`` is rewritten to ``--layer counts``.
"""

from __future__ import annotations

import argparse
import inspect
import math
import re
from collections.abc import Callable

# --------------------------------------------------------------------------- errors


class CommandLineError(Exception):
    """An error in the command's arguments, reported in one line with exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse's own print the usage too)."""

    def error(self, message: str):  # type: ignore[override]
        """Raise :class:`CommandLineError` instead of printing the usage and exiting."""
        raise CommandLineError(f"{self.prog}: {message} (see {self.prog} --help)")


# Python argument → command-line option, for the names whose option is not simply the name
# with dashes.
_RENAMED = {
    "control_category": "--control",
    "categorical_covariate_keys": "--categorical-covariate",
    "continuous_covariate_keys": "--continuous-covariate",
    "rna_layer": "--layer",
    "n_epochs_kl_warmup": "--kl-warmup-epochs",
    "n_samples_overall": "--de-samples",
    "use_observed_lib_size": "--library-size",
}
# The bounds of train() that the command line passes through, in this order.
BOUNDS = (
    "leakage_bound",
    "dependence_bound",
    "background_shift_bound",
    "edge_bound",
)
MODEL_OPTIONS = (
    "n_background_latent",
    "n_salient_latent",
    "n_hidden",
    "n_layers",
    "dropout_rate",
    "gene_likelihood",
    "prior",
    "n_prior_components",
)

# Arguments that messages may name, in the order the rewrite tries them (longest first, so
# that "n_salient_latent" is not read as "n_cells" or the like).
_ARGUMENTS = sorted(
    {
        *_RENAMED,
        *MODEL_OPTIONS,
        *BOUNDS,
        "condition_key",
        "batch_key",
        "size_factor_key",
        "layer",
        "max_epochs",
        "batch_size",
        "train_size",
        "accelerator",
        "devices",
        "threshold",
        "min_effect",
        "n_top_genes",
        "n_cells",
        "n_genes",
        "seed",
        "lr",
    },
    key=len,
    reverse=True,
)


def option_name(argument: str) -> str:
    """Return the command-line option of a Python argument: ``batch_key`` → ``--batch-key``."""
    return _RENAMED.get(argument, "--" + argument.replace("_", "-"))


_SETUP_CALL = re.compile(
    r"(?:ComparativeVI\.)?setup_(?:anndata|mudata)\(\s*\w+\s*,\s*(\w+)=(['\"]?)([^'\",)]*)\2"
    r"(?:\s*,\s*\.\.\.)?\s*\)"
)
_PLAN_KWARG = re.compile(r"plan_kwargs=\{\s*['\"](\w+)['\"]\s*:\s*[^}]*\}")
_NONE_TO_X = re.compile(r"\b[Pp]ass (?:rna_)?layer=None to use (\w+)\.X")


def _with_value(argument: str, value: str) -> str:
    return f"{option_name(argument)} {value}".rstrip()


def command_line_message(message: str) -> str:
    """Rewrite a message of the Python API in the words of the command line, on one line.

    ``ComparativeVI.setup_anndata(adata, layer='counts', ...)`` and ``layer='counts'``
    become ``--layer counts``, ``plan_kwargs={'lr': ...}`` becomes ``--lr``, and a bare
    argument name such as ``condition_key`` becomes ``--condition-key``.
    """
    message = _SETUP_CALL.sub(lambda m: _with_value(m[1], m[3]), message)
    message = _PLAN_KWARG.sub(lambda m: option_name(m[1]), message)
    message = _NONE_TO_X.sub(r"Leave out --layer to use \1.X", message)
    names = "|".join(_ARGUMENTS)
    # name='value', name="value" or name=value (a number or a bare word).
    message = re.sub(
        rf"(?<![\w.\[])({names})=(['\"])(.*?)\2",
        lambda m: _with_value(m[1], m[3]),
        message,
    )
    message = re.sub(
        rf"(?<![\w.\[])({names})=([\w.+-]+)",
        lambda m: _with_value(m[1], "none" if m[2] == "None" else m[2]),
        message,
    )
    # Bare names with an underscore are identifiers, never English words: safe to rewrite.
    message = re.sub(
        rf"(?<![\w.\['\"-])({'|'.join(a for a in _ARGUMENTS if '_' in a)})\b(?!['\"\]=(])",
        lambda m: option_name(m[1]),
        message,
    )
    return " ".join(message.split())


# --------------------------------------------------------------------------- value types


def _number(kind: Callable[[str], float], text: str, what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Parse an integer of at least 1."""
    value = _number(int, text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(value)


def finite_float(text: str) -> float:
    """Parse a finite number."""
    return _number(float, text, "a finite number")


def positive_float(text: str) -> float:
    """Parse a finite number above 0."""
    value = _number(float, text, "a positive number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def unit_interval(text: str) -> float:
    """Parse a number in [0, 1]."""
    value = _number(float, text, "a number between 0 and 1")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}")
    return value


def dropout(text: str) -> float:
    """Parse a number in [0, 1)."""
    value = _number(float, text, "a number in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def train_fraction(text: str) -> float:
    """Parse a number in (0, 1]."""
    value = _number(float, text, "a number in (0, 1]")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


def bound(text: str) -> float | None:
    """Parse a number of at least 0, or ``none`` (the constraint off, ``None``)."""
    if text.strip().lower() in {"none", "off"}:
        return None
    value = _number(float, text, "a number >= 0 or 'none'")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 or 'none', got {text!r}")
    return value


def devices(text: str) -> int | list[int] | str:
    """Parse ``auto``, a number of devices, or a comma-separated list of device indices."""
    if text == "auto":
        return text
    try:
        if "," in text:
            indices = [int(part) for part in text.split(",") if part.strip()]
            if indices and min(indices) >= 0:
                return indices
        elif int(text) >= 1:
            return int(text)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"must be 'auto', a number of devices or a list of device indices such as 0,1; "
        f"got {text!r}"
    )


def _defaults(function: Callable) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _shown(value: object) -> str:
    return "none" if value is None else str(value)


# --------------------------------------------------------------------------- option groups


def add_model_options(parser: argparse.ArgumentParser, **overrides) -> None:
    """Options of the model: latent sizes, networks, likelihood, library size, prior."""
    from .._constants import GENE_LIKELIHOODS, PRIORS
    from ..model import ComparativeVI

    defaults = {**_defaults(ComparativeVI.__init__), **overrides}
    group = parser.add_argument_group("model")
    for name, kind in (
        ("n_background_latent", positive_int),
        ("n_salient_latent", positive_int),
        ("n_hidden", positive_int),
        ("n_layers", positive_int),
    ):
        group.add_argument(
            option_name(name),
            type=kind,
            default=defaults[name],
            metavar="N",
            help="default: %(default)s",
        )
    group.add_argument(
        "--dropout-rate",
        type=dropout,
        default=defaults["dropout_rate"],
        metavar="P",
        help="encoder dropout (default: %(default)s)",
    )
    group.add_argument(
        "--gene-likelihood",
        choices=list(GENE_LIKELIHOODS),
        default=defaults["gene_likelihood"],
        help="default: %(default)s",
    )
    group.add_argument(
        "--library-size",
        choices=["observed", "latent"],
        default="observed" if defaults["use_observed_lib_size"] else "latent",
        help="each cell's observed total counts, or a latent library with a per-batch "
        "log-normal prior (default: %(default)s)",
    )
    group.add_argument(
        "--prior",
        choices=list(PRIORS),
        default=defaults["prior"],
        help="prior of the salient latent of perturbed cells (default: %(default)s)",
    )
    group.add_argument(
        "--n-prior-components",
        type=positive_int,
        default=defaults["n_prior_components"],
        metavar="K",
        help="components of --prior mixture (default: %(default)s)",
    )


def model_kwargs(args: argparse.Namespace) -> dict:
    """Return the keyword arguments of :class:`~compvi.ComparativeVI` chosen by ``args``."""
    kwargs = {name: getattr(args, name) for name in MODEL_OPTIONS}
    kwargs["use_observed_lib_size"] = args.library_size == "observed"
    return kwargs


def add_training_options(parser: argparse.ArgumentParser, *, max_epochs_help: str) -> None:
    """Options of ``train``: epochs, KL warm-up, cells per step, bounds, seed, devices."""
    from ..model import ComparativeVI

    defaults = _defaults(ComparativeVI.train)
    group = parser.add_argument_group("training")
    group.add_argument(
        "--max-epochs", type=positive_int, metavar="N", default=None, help=max_epochs_help
    )
    group.add_argument(
        "--kl-warmup-epochs",
        type=positive_int,
        metavar="N",
        default=None,
        help="epochs over which the KL weight rises linearly to 1 (default: half the epochs, "
        "as train(), so that the second half trains the full ELBO)",
    )
    group.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        default=defaults["batch_size"],
        help="control and perturbed cells each per training step (default: %(default)s)",
    )
    group.add_argument(
        "--lr", type=positive_float, default=1e-3, help="learning rate (default: %(default)s)"
    )
    for name in BOUNDS:
        group.add_argument(
            option_name(name),
            type=bound,
            default=defaults[name],
            metavar="B",
            help=f"as train({name}=...); 'none' turns it off (default: {_shown(defaults[name])})",
        )
    group.add_argument(
        "--train-size",
        type=train_fraction,
        default=defaults["train_size"],
        metavar="F",
        help="fraction of each group used for training (default: %(default)s)",
    )
    group.add_argument(
        "--seed", type=int, default=0, help="seed of scvi-tools' RNGs (default: %(default)s)"
    )
    group.add_argument(
        "--accelerator",
        default=defaults["accelerator"],
        help="Lightning accelerator: auto, cpu, gpu, ... (default: %(default)s)",
    )
    group.add_argument(
        "--devices",
        type=devices,
        default=defaults["devices"],
        help="number of devices, or indices such as 0,1 (default: %(default)s)",
    )


def train_kwargs(args: argparse.Namespace) -> dict:
    """Return the keyword arguments of ``train`` chosen by ``args`` (not the epochs)."""
    return {
        "batch_size": args.batch_size,
        "train_size": args.train_size,
        "accelerator": args.accelerator,
        "devices": args.devices,
        **{name: getattr(args, name) for name in BOUNDS},
    }


def default_max_epochs(n_cells: int) -> int:
    """Return scvi-tools' default epochs, ``min(400, round(20000 / n_cells * 400))`` (>= 1)."""
    return max(1, min(400, round(20_000 / n_cells * 400)))


def kl_warmup_epochs(max_epochs: int, requested: int | None) -> int:
    """Epochs of the KL warm-up: ``requested``, or ``train()``'s default, half of the epochs.

    The command line passes the number to ``train`` itself, so that what it prints is what
    runs.
    """
    if requested is not None:
        return requested
    from ..model._training import default_kl_warmup_epochs

    return default_kl_warmup_epochs(max_epochs)


def add_output_options(group: argparse._ActionsContainer) -> None:
    """Add ``--force`` and ``--quiet`` to a parser or an argument group."""
    group.add_argument(
        "--force", action="store_true", help="replace outputs that exist (default: refuse)"
    )
    group.add_argument(
        "--quiet", action="store_true", help="print nothing but errors (no progress bar)"
    )
