"""ComparativeVI's defaults beside scvi-tools' ContrastiveVI's on one simulated screen.

Run: ``.venv/bin/python benchmarks/defaults.py [--epochs 100] [--seeds 0 1 2]``.
Both models see the same cells, the same control/perturbed split, batch size 128 per group
and the same number of epochs. The truth has 4 background and 4 salient dimensions; each
model is fitted with the true sizes (4 + 4) and with both libraries' defaults (10 + 10).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from _methods import block_scores, fit_compvi, fit_contrastivevi

from compvi.data import simulate_screen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-cells", type=int, default=4000)
    parser.add_argument("--n-genes", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/defaults.md")
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        adata = simulate_screen(n_cells=args.n_cells, n_genes=args.n_genes, seed=seed)
        for sizes in ((4, 4), (10, 10)):
            latent = {"n_background_latent": sizes[0], "n_salient_latent": sizes[1]}
            for name, fit in (("ComparativeVI", fit_compvi), ("ContrastiveVI", fit_contrastivevi)):
                result = fit(adata, max_epochs=args.epochs, seed=seed, **latent)
                rows.append(
                    {"method": name, "latent": f"{sizes[0]}+{sizes[1]}", "seed": seed}
                    | block_scores(adata, result)
                )
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    summary = table.drop(columns="seed").groupby(["latent", "method"]).agg(["mean", "std"])
    header = (
        f"{args.n_cells} cells x {args.n_genes} genes (truth: 4 background + 4 salient "
        f"dimensions), {args.epochs} epochs, seeds {args.seeds}; mean and std over seeds."
    )
    print(f"\n{header}\n\n{summary.round(3).to_string()}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# ComparativeVI vs ContrastiveVI at their defaults\n\n"
            f"Command: `python benchmarks/defaults.py {' '.join(sys.argv[1:])}`\n\n"
            f"{header}\n\n{summary.round(3).to_markdown()}\n\n"
            f"Per seed:\n\n{table.round(3).to_markdown(index=False)}\n"
        )


if __name__ == "__main__":
    main()
