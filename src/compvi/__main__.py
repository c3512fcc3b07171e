"""Command-line entry points: ``compvi demo`` and ``compvi fit``."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compvi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="simulate a perturbation screen, fit ComparativeVI, report latent recovery",
    )
    demo.add_argument("--out", default="compvi_demo", help="output folder (default: %(default)s)")
    demo.add_argument("--n-cells", type=int, default=4000, help="default: %(default)s")
    demo.add_argument("--n-genes", type=int, default=300, help="default: %(default)s")
    demo.add_argument("--max-epochs", type=int, default=100, help="default: %(default)s")
    demo.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    fit = commands.add_parser(
        "fit", help="fit ComparativeVI to an h5ad file; write embeddings and perturbation scores"
    )
    fit.add_argument("input", help="h5ad file with raw counts")
    fit.add_argument("--condition-key", required=True, help="obs column with the condition")
    fit.add_argument(
        "--control", required=True, action="append", help="control label (repeat for several)"
    )
    fit.add_argument("--batch-key", help="obs column with batches")
    fit.add_argument("--layer", help="layer with raw counts (default: X)")
    fit.add_argument("--max-epochs", type=int, help="default: scvi-tools' heuristic")
    fit.add_argument("--out", required=True, help="output .h5ad file")
    fit.add_argument("--model-dir", help="folder to save the trained model to")
    return parser


def _demo(args: argparse.Namespace) -> None:
    from ._demo import run_demo

    table = run_demo(
        args.out,
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        max_epochs=args.max_epochs,
        seed=args.seed,
    )
    print("\nRecovery of the simulated latents (higher R² and MCC are better, leakage lower):")
    print(table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print(f"\nWrote {args.out}/screen.h5ad, embeddings.png, recovery.csv and model/.")


def _fit(args: argparse.Namespace) -> None:
    from ._fit import fit_h5ad

    adata = fit_h5ad(
        args.input,
        args.out,
        condition_key=args.condition_key,
        control_category=args.control,
        batch_key=args.batch_key,
        layer=args.layer,
        max_epochs=args.max_epochs,
        model_dir=args.model_dir,
    )
    summary = adata.uns["compvi"]["perturbations"]
    columns = ["n_cells", "responder_fraction", "effect_size", "top_genes"]
    print("\nPerturbations, strongest first (effect size in control standard deviations):")
    print(summary[columns].to_string(float_format=lambda v: f"{v:.2f}"))
    saved = f" and the model to {args.model_dir}" if args.model_dir else ""
    print(
        f"\nWrote {adata.n_obs} cells with both embeddings and perturbation scores to "
        f"{args.out}{saved}."
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command named in ``argv`` (default: ``sys.argv[1:]``); return an exit code."""
    args = _parser().parse_args(argv)
    run = {"demo": _demo, "fit": _fit}[args.command]
    try:
        run(args)
    except (ValueError, KeyError, FileNotFoundError) as error:
        # KeyError's str() adds quotes around the message; print the message itself.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"compvi {args.command}: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
