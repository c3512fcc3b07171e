"""The ``compvi fit`` job: fit ComparativeVI to an .h5ad or .h5mu file, write every output.

Every check that does not need a trained model runs before training: the output paths,
the input file, the registration of its fields and the model's options. The outputs (the
AnnData or MuData with the results, the per-perturbation summary, the DE table, the
figures and the model) are written into hidden folders beside their targets and moved into
place only when all of them are written: a failure leaves nothing new behind.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from anndata import AnnData
from mudata import MuData

from . import _options as options
from ._staging import StagedOutputs

INPUT_SUFFIXES = (".h5ad", ".h5mu")


def output_paths(out: Path, model_dir: Path | None) -> dict[str, Path]:
    """Name → path of every output a run may write, beside ``out`` (the model at ``model_dir``).

    Outputs that a run does not produce (``--no-de``, ``--no-figures``, one perturbation
    only) are still targets: an earlier run's file there would not match the new results, so
    it blocks the run without ``--force`` and is removed with it.
    """
    stem = out.parent / out.stem
    paths = {"data": out}
    for name, suffix in (
        ("perturbations", "_perturbations.csv"),
        ("de", "_de.csv"),
        ("umap", "_umap.png"),
        ("clustermap", "_clustermap.png"),
        ("training", "_training.png"),
    ):
        paths[name] = Path(f"{stem}{suffix}")
    if model_dir is not None:
        paths["model"] = model_dir
    return paths


def _looks_like_saved_model(folder: Path) -> bool:
    return not any(folder.iterdir()) or (folder / "model.pt").is_file()


def check_output_paths(paths: dict[str, Path], input_path: Path, *, force: bool) -> None:
    """Refuse outputs that cannot be written, or that exist without ``force``.

    Raises
    ------
    ValueError
        A missing parent folder, an output file that is a folder, ``--out`` equal to the
        input, a model folder that is a file or (with ``force``) a folder that holds no saved
        model, or existing outputs without ``force``.

    """
    existing = []
    for name, path in paths.items():
        what = "--model-dir" if name == "model" else "--out"
        if not path.parent.is_dir():
            raise ValueError(
                f"{what} {str(path)!r}: the folder {str(path.parent)!r} does not exist; "
                "create it first."
            )
        if name == "model":
            if path.exists() and not path.is_dir():
                raise ValueError(f"--model-dir {str(path)!r} is a file, not a folder.")
            if path.is_dir() and force and not _looks_like_saved_model(path):
                raise ValueError(
                    f"--model-dir {str(path)!r} holds files but no saved model (model.pt); "
                    "--force replaces only a saved model. Choose another folder."
                )
        elif path.is_dir():
            raise ValueError(f"{what} {str(path)!r} is a folder; name a file.")
        if path.exists():
            existing.append(str(path))
    if paths["data"].resolve() == input_path.resolve():
        raise ValueError("--out names the input file; write the results to another file.")
    if existing and not force:
        raise ValueError(
            f"{len(existing)} output(s) exist: {', '.join(existing)}; pass --force to "
            "replace them, or choose another --out or --model-dir."
        )


def read_input(path: Path, *, backed: bool) -> AnnData | MuData:
    """Read an .h5ad or .h5mu file, with a one-line error for a file that is not one."""
    if not path.is_file():
        raise FileNotFoundError(f"input file {str(path)!r} does not exist.")
    if path.suffix not in INPUT_SUFFIXES:
        raise ValueError(f"the input must be an .h5ad or .h5mu file, got {str(path)!r}.")
    try:
        if path.suffix == ".h5mu":
            import mudata

            return mudata.read_h5mu(path, backed="r" if backed else None)
        import anndata

        return anndata.read_h5ad(path, backed="r" if backed else None)
    except Exception as error:  # h5py, anndata and mudata raise many kinds
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(
            f"cannot read {str(path)!r} as an {path.suffix} file ({reason}); is it complete "
            "and written by anndata or mudata?"
        ) from error


def set_seed(seed: int) -> None:
    """Seed scvi-tools' RNGs without Lightning's "Seed set to" line on stderr."""
    import scvi

    logger = logging.getLogger("lightning.fabric.utilities.seed")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        scvi.settings.seed = seed
    finally:
        logger.setLevel(level)


def _modality_of(mdata: MuData, rna: str, keys: list[str]) -> str | None:
    """``rna`` when the keys are columns of the RNA modality's obs but not of ``mdata.obs``."""
    if keys and all(k not in mdata.obs for k in keys) and all(k in mdata[rna].obs for k in keys):
        return rna
    return None


def setup(data: AnnData | MuData, args: argparse.Namespace) -> None:
    """Register ``data`` with ComparativeVI as the command line asks.

    With a MuData, the counts are read from ``--rna-modality``, and each obs key from
    ``mdata.obs`` or, when only the RNA modality's obs has it, from there.
    """
    from ..model import ComparativeVI

    fields = {
        "condition_key": args.condition_key,
        "control_category": list(args.control),
        "batch_key": args.batch_key,
        "size_factor_key": args.size_factor_key,
        "categorical_covariate_keys": args.categorical_covariate or None,
        "continuous_covariate_keys": args.continuous_covariate or None,
    }
    if isinstance(data, AnnData):
        if args.rna_modality is not None:
            raise ValueError("--rna-modality applies to .h5mu input only.")
        ComparativeVI.setup_anndata(data, layer=args.layer, **fields)
        return
    rna = args.rna_modality or "rna"
    if rna not in data.mod:
        raise ValueError(
            f"--rna-modality {rna!r} is not a modality of the input (modalities: "
            f"{list(data.mod)})."
        )
    modalities = {"rna_layer": rna}
    for argument in ("condition_key", "batch_key", "size_factor_key"):
        if fields[argument] is not None:
            modalities[argument] = _modality_of(data, rna, [fields[argument]])
    for argument in ("categorical_covariate_keys", "continuous_covariate_keys"):
        if fields[argument]:
            modalities[argument] = _modality_of(data, rna, fields[argument])
    ComparativeVI.setup_mudata(data, rna_layer=args.layer, modalities=modalities, **fields)


def color_columns(data: AnnData | MuData, args: argparse.Namespace) -> dict[str, pd.Series]:
    """Return the obs columns ``--color`` names, read as setup reads obs keys."""
    columns = {}
    for key in args.color:
        if isinstance(data, AnnData):
            obs = data.obs
        else:
            rna = args.rna_modality or "rna"
            modality = _modality_of(data, rna, [key])
            obs = data.obs if modality is None else data[modality].obs
        if key not in obs:
            raise KeyError(f"--color {key!r} is not a column of the input's obs.")
        columns[key] = obs[key]
    return columns


def _figures(model, data, staged: StagedOutputs, args: argparse.Namespace, say) -> None:
    """Write the UMAP pair, the perturbation clustermap and the training diagnostics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import pl, tl

    condition = model._registered_obs(data, "condition_key")[args.condition_key]
    # The plots need the labels and the embeddings only, never the counts (which may be on
    # disk, or in a modality).
    frame = pd.DataFrame({args.condition_key: condition.astype("category").to_numpy()})
    frame.index = data.obs_names
    for key, column in color_columns(data, args).items():
        frame[key] = column.reindex(frame.index).to_numpy()
    plotted = AnnData(
        obs=frame,
        obsm={key: data.obsm[key] for key in ("X_compvi_salient", "X_compvi_background")},
    )
    tl.umap(plotted, random_state=args.seed)
    colors = list(dict.fromkeys([args.condition_key, *args.color]))
    figure = pl.embeddings(plotted, color=colors, show=False)
    figure.savefig(staged.path("umap"), dpi=120, bbox_inches="tight")
    plt.close(figure)
    for key in ("X_compvi_salient_umap", "X_compvi_background_umap"):
        data.obsm[key] = plotted.obsm[key]
    if len(set(condition.astype(str)) - set(model.control_categories)) >= 2:
        figure = pl.perturbation_clustermap(
            plotted,
            groupby=args.condition_key,
            control_category=model.control_categories,
            metric="cosine",
            show=False,
        )
        figure.savefig(staged.path("clustermap"), dpi=120, bbox_inches="tight")
        plt.close(figure)
    else:
        say("One perturbation only: no clustermap.")
    figure = pl.training_diagnostics(model, show=False)
    figure.savefig(staged.path("training"), dpi=120, bbox_inches="tight")
    plt.close(figure)


def fit_file(args: argparse.Namespace, *, say: Callable[[str], None]) -> tuple:
    """Run ``compvi fit`` with parsed arguments; return the summary table and paths written.

    Parameters
    ----------
    args
        The parsed command line (see ``compvi fit --help``).
    say
        Prints progress (a no-op with ``--quiet``).

    Returns
    -------
    The per-perturbation summary (:meth:`~compvi.ComparativeVI.add_results`'s
    ``uns["compvi"]["perturbations"]``), the fitted AnnData or MuData, and the list of
    paths written.

    """
    from ..model import ComparativeVI

    input_path, out = Path(args.input), Path(args.out)
    if out.suffix not in INPUT_SUFFIXES:
        raise ValueError(f"--out must name an .h5ad or .h5mu file, got {str(out)!r}.")
    if Path(args.input).suffix in INPUT_SUFFIXES and out.suffix != input_path.suffix:
        raise ValueError(
            f"--out must be an {input_path.suffix} file like the input, got {str(out)!r}."
        )
    model_dir = None if args.model_dir is None else Path(args.model_dir)
    paths = output_paths(out, model_dir)
    check_output_paths(paths, input_path, force=args.force)
    data = read_input(input_path, backed=args.backed)
    try:
        set_seed(args.seed)
        setup(data, args)
        color_columns(data, args)  # a missing --color column fails before training
        model = ComparativeVI(data, **options.model_kwargs(args))
        max_epochs = args.max_epochs
        if max_epochs is None:
            max_epochs = options.default_max_epochs(data.n_obs)
            why = f"scvi-tools' default for {data.n_obs:,} cells: min(400, 20000 / cells x 400)"
        else:
            why = "--max-epochs"
        warmup = options.kl_warmup_epochs(max_epochs, args.kl_warmup_epochs)
        end = "" if warmup <= max_epochs else f", so it ends at {max_epochs / warmup:.2f}"
        say(
            f"Training {max_epochs} epochs ({why}); the KL weight rises to 1 over the first "
            f"{warmup}{end} (--kl-warmup-epochs)."
        )
        with StagedOutputs(paths) as staged:
            model.train(
                max_epochs=max_epochs,
                plan_kwargs={"lr": args.lr, "n_epochs_kl_warmup": warmup},
                enable_progress_bar=not args.quiet,
                **options.train_kwargs(args),
            )
            model.add_results(
                data,
                threshold=args.threshold,
                min_effect=args.min_effect,
                n_top_genes=args.n_top_genes,
            )
            summary = data.uns["compvi"]["perturbations"]
            summary.to_csv(staged.path("perturbations"), index_label="perturbation")
            if not args.no_de:
                say("Differential expression of each perturbation against its counterfactual…")
                table = model.differential_expression(
                    data, n_samples_overall=args.de_samples, silent=args.quiet
                )
                table.to_csv(staged.path("de"), index_label="gene")
            if not args.no_figures:
                _figures(model, data, staged, args, say)
            if model_dir is not None:
                model.save(staged.path("model"), overwrite=True)
            data.write(staged.path("data"))
            written = staged.commit()
    finally:
        # A backed file stays open until closed; close it before the caller moves on.
        if getattr(data, "isbacked", False):
            data.file.close()
    return summary, data, written


def add_fit_arguments(fit: argparse.ArgumentParser) -> None:
    """Add the arguments of ``compvi fit`` to its parser."""
    data = fit.add_argument_group("input")
    data.add_argument("input", help=".h5ad or .h5mu file with raw counts")
    data.add_argument("--condition-key", required=True, help="obs column with the condition")
    data.add_argument(
        "--control",
        required=True,
        action="append",
        metavar="LABEL",
        help="control label of --condition-key (repeat for several)",
    )
    data.add_argument("--layer", help="layer with the raw counts (default: X)")
    data.add_argument("--batch-key", help="obs column with batches")
    data.add_argument("--size-factor-key", help="obs column with positive size factors")
    data.add_argument(
        "--categorical-covariate",
        action="append",
        default=[],
        metavar="KEY",
        help="obs column with a categorical covariate (repeat for several)",
    )
    data.add_argument(
        "--continuous-covariate",
        action="append",
        default=[],
        metavar="KEY",
        help="obs column with a continuous covariate (repeat for several)",
    )
    data.add_argument(
        "--backed",
        action="store_true",
        help="read the counts from disk a block at a time instead of loading them",
    )
    data.add_argument(
        "--rna-modality",
        help=".h5mu input: the modality with the RNA counts (default: rna); obs keys are "
        "read from the MuData's obs, or from this modality's obs when only it has them",
    )
    options.add_model_options(fit)
    options.add_training_options(
        fit,
        max_epochs_help="default: scvi-tools' min(400, 20000 / cells x 400), printed before "
        "training",
    )
    results = fit.add_argument_group("results")
    results.add_argument(
        "--threshold",
        type=options.unit_interval,
        default=0.5,
        help="responder probability above which a perturbed cell is a responder "
        "(default: %(default)s)",
    )
    results.add_argument(
        "--min-effect",
        type=options.finite_float,
        default=1.0,
        help="smallest shift, in control standard deviations, of a responder "
        "(default: %(default)s)",
    )
    results.add_argument(
        "--n-top-genes",
        type=options.positive_int,
        default=5,
        help="top genes listed per perturbation (default: %(default)s)",
    )
    results.add_argument(
        "--de-samples",
        type=options.positive_int,
        default=5000,
        metavar="N",
        help="posterior draws per perturbation for the DE table (default: %(default)s)",
    )
    results.add_argument("--no-de", action="store_true", help="write no DE table")
    results.add_argument("--no-figures", action="store_true", help="draw no figures")
    results.add_argument(
        "--color",
        action="append",
        default=[],
        metavar="KEY",
        help="also colour the UMAPs by this obs column (a cell type, say); repeat for more",
    )
    output = fit.add_argument_group("output")
    output.add_argument(
        "--out",
        required=True,
        help="output .h5ad (.h5mu for .h5mu input); the CSV tables and PNG figures are "
        "written beside it as OUT_perturbations.csv, OUT_de.csv, OUT_umap.png, "
        "OUT_clustermap.png and OUT_training.png",
    )
    output.add_argument("--model-dir", help="folder to save the trained model to")
    options.add_output_options(output)
