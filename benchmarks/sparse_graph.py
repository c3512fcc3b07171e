"""The sparse prior's perturbation -> factor graph on the Papalexi et al. 2021 CRISPR screen.

Questions from what is known about the screen (../shared/data/README.md): do the IFN-gamma
pathway knock-outs (IFNGR1, IFNGR2, JAK2, STAT1) share salient factors, does SMAD4 use a
different one, and do the null knock-outs CD86 and ATF2 get (almost) no edges? Each seed's
graph is read on its own; two seeds' graphs are compared after matching their factors by
the correlation of their salient embeddings.

    python benchmarks/sparse_graph.py                     # seeds 0 and 1, 100 epochs
    python benchmarks/sparse_graph.py --seeds 0 --epochs 5 --out /tmp/graph
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from _methods import fit_compvi
from real_data import DATA_DIR, NULLS, PATHWAY, RESULTS, _dataset

import compvi

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SMAD4 = "SMAD4"


def _jaccard(a: pd.Series, b: pd.Series) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else float("nan")


def graph_answers(graph: pd.DataFrame, threshold: float = 0.5) -> dict[str, float]:
    """Answer the screen's questions from one learned graph of edge probabilities."""
    edges = graph > threshold
    per_target = edges.sum(1)
    pathway_union = edges.loc[PATHWAY].any(axis=0)
    ranks = per_target.rank(ascending=False)
    return {
        "edges per knock-out (mean)": float(per_target.mean()),
        "factors used by all 4 pathway knock-outs": int(edges.loc[PATHWAY].all(axis=0).sum()),
        "pathway pairwise Jaccard (mean)": float(
            np.mean([_jaccard(edges.loc[a], edges.loc[b]) for a, b in combinations(PATHWAY, 2)])
        ),
        "SMAD4 edges": int(per_target[SMAD4]),
        "SMAD4 factors outside the pathway's": int((edges.loc[SMAD4] & ~pathway_union).sum()),
        "SMAD4 Jaccard with the pathway's factors": _jaccard(edges.loc[SMAD4], pathway_union),
        **{f"{null} edges": int(per_target[null]) for null in NULLS},
        **{f"{null} edge-count rank of {len(graph)}": float(ranks[null]) for null in NULLS},
        "knock-outs without edges": int((per_target == 0).sum()),
    }


def seed_agreement(fits: list) -> dict[str, float]:
    """SHD between two seeds' graphs after matching the second's factors to the first's."""
    first, second = fits[:2]
    matching = compvi.metrics.match_factors(first.salient, second.salient)
    shd = compvi.metrics.structural_hamming_distance(
        (first.graph > 0.5).astype(int), second.graph, matching
    )
    return {
        "factor MCC between seeds": compvi.metrics.mcc(first.salient, second.salient),
        "graph SHD between seeds": shd["shd"],
        "edges in seed 0": int((first.graph > 0.5).to_numpy().sum()),
    }


def plot(graphs: dict[int, pd.DataFrame], path: Path) -> None:
    """Each seed's graph, knock-outs ordered as the pathway, SMAD4, the nulls, the rest."""
    order = [*PATHWAY, SMAD4, *NULLS]
    fig, axes = plt.subplots(1, len(graphs), figsize=(7 * len(graphs), 8), squeeze=False)
    for ax, (seed, graph) in zip(axes[0], graphs.items(), strict=True):
        rows = order + [t for t in graph.index if t not in order]
        compvi.pl.perturbation_graph(graph.loc[rows], ax=ax, show=False)
        ax.set_title(f"seed {seed}: {int((graph > 0.5).to_numpy().sum())} edges", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--edge-bound", type=float, default=2.0)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    path = args.data_dir / "papalexi2021_thp1_crispr.h5ad"
    if not path.exists():
        raise SystemExit(f"{path} is absent: this benchmark needs the shared Papalexi screen.")
    data = _dataset("papalexi", args.data_dir)
    fits = {}
    for seed in args.seeds:
        fits[seed] = fit_compvi(
            data["adata"],
            max_epochs=args.epochs,
            seed=seed,
            condition_key=data["condition_key"],
            control=data["control"],
            batch_key=data["batch_key"],
            prior="sparse",
            edge_bound=args.edge_bound,
        )
        print(f"seed {seed}: {fits[seed].seconds:.0f} s")
    answers = pd.DataFrame({seed: graph_answers(fit.graph) for seed, fit in fits.items()})
    answers.columns = [f"seed {seed}" for seed in answers.columns]
    graphs = {seed: fit.graph for seed, fit in fits.items()}
    focus = pd.concat(
        {f"seed {seed}": graph.loc[[*PATHWAY, SMAD4, *NULLS]] for seed, graph in graphs.items()}
    )
    print(answers.to_string())
    print(focus.round(2).to_string())
    agreement = seed_agreement(list(fits.values())) if len(fits) > 1 else {}
    if agreement:
        print(agreement)

    args.out.mkdir(parents=True, exist_ok=True)
    pd.concat({f"seed {seed}": graph for seed, graph in graphs.items()}).to_csv(
        args.out / "sparse_graph_edges.csv"
    )
    plot(graphs, args.out / "sparse_graph.png")
    seed_list = " ".join(map(str, args.seeds))
    text = [
        "# The sparse prior's graph on the Papalexi CRISPR screen",
        "",
        f"Command: `python benchmarks/sparse_graph.py --seeds {seed_list} "
        f"--epochs {args.epochs} --edge-bound {args.edge_bound}`. ComparativeVI with "
        "`prior='sparse'`, 10 background + 10 salient latents, batch key `bio_rep`, 128 "
        "cells of each group per step, otherwise defaults. An edge is an edge probability "
        "above 0.5.",
        "",
        "## Answers",
        "",
        answers.to_markdown(floatfmt=".2f"),
        "",
        "## Edge probabilities of the knock-outs with expectations",
        "",
        focus.round(2).to_markdown(),
        "",
    ]
    if agreement:
        text += [
            "## Seed to seed",
            "",
            "Seed 1's factors matched to seed 0's by the Hungarian matching of their salient "
            "embeddings' correlations; SHD counts the edges on which the matched graphs "
            "differ.",
            "",
            pd.Series(agreement).to_frame("value").to_markdown(floatfmt=".3f"),
            "",
        ]
    text += ["![graphs](sparse_graph.png)", ""]
    (args.out / "sparse_graph.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
