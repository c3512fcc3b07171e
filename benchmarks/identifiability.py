"""Identifiability of ComparativeVI against ContrastiveVI, ablations and floors.

Run from the repository root:

    python benchmarks/identifiability.py --tier smoke    # < 5 min on 2 cores
    python benchmarks/identifiability.py --tier full     # writes benchmarks/results/
    python benchmarks/identifiability.py --tier priors   # writes benchmarks/results/priors/

Every configuration (a named simulated setting of ``compvi.data.SETTINGS`` and the model's
latent sizes) is fitted by every method over data seeds x model seeds. Each run reports
block-wise affine R² (true block from learned block, held-out cells), leakage R² across
blocks, the control cells' salient norm relative to perturbed cells, salient MCC and
seconds per epoch. Paired differences compare ComparativeVI with ContrastiveVI on the same
data and model seed.

The ``priors`` tier fits each salient prior on the screen simulated to match it (a Gaussian
mixture, perturbation-specific means and variances, a sparse perturbation -> factor graph,
and that graph with more salient dimensions than true factors) beside ``prior="normal"``
and ContrastiveVI, and adds Spearman MCC, the structural Hamming distance of the learned
graph, what surplus factors carry, and the mixture's component recovery.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from _methods import block_scores, fit_compvi, fit_contrastivevi, fit_pca, fit_scvi_pooled

from compvi.data import SETTINGS, simulate_setting
from compvi.metrics import random_rotation_floor, seed_stability

RESULTS = Path(__file__).parent / "results"
METRICS = [
    "background R²",
    "salient R²",
    "leakage R² (s←b)",
    "leakage R² (b←s)",
    "kNN leakage R² (s←b)",
    "kNN leakage R² (b←s)",
    "control salient norm",
    "salient MCC",
    "salient MCC (Spearman)",
    "salient seed stability",
    "graph SHD",
    "surplus edges",
    "surplus variance share",
    "component ARI",
    "s/epoch",
]
LOWER_IS_BETTER = ("leakage", "kNN leakage", "control", "s/", "graph", "surplus")
LEAKAGE_METRICS = [m for m in METRICS if "leakage" in m]
CONTRASTIVE_PENALTY_GRID = (1.0, 10.0, 100.0)


@dataclass(frozen=True)
class Config:
    """A simulated setting with the latent sizes the models are given."""

    label: str
    setting: str
    n_background_latent: int
    n_salient_latent: int


CONFIGS = [
    Config("linear 4+4", "linear", 4, 4),
    Config("piecewise_affine 4+4", "piecewise_affine", 4, 4),
    Config("piecewise_affine 10+10", "piecewise_affine", 10, 10),
    Config("smooth 4+4", "smooth", 4, 4),
    Config("graded_screen 4+4", "graded_screen", 4, 4),
    Config("mixture_screen 4+4", "mixture_screen", 4, 4),
    Config("conditional_screen 4+4", "conditional_screen", 4, 4),
    Config("sparse_screen 4+5", "sparse_screen", 4, 5),
    Config("sparse_screen 4+8 (surplus)", "sparse_screen", 4, 8),
]
N_MIXTURE_COMPONENTS = 4
# The sparse screen's true mean number of edges per perturbation: an oracle edge bound.
TRUE_EDGES = float(np.asarray(SETTINGS["sparse_screen"].simulation["salient_graph"]).sum(1).mean())

METHODS = {
    "ComparativeVI": fit_compvi,
    "ComparativeVI mgda": partial(fit_compvi, balancing="mgda"),
    "ComparativeVI no background shift": partial(fit_compvi, background_shift_bound=None),
    "ComparativeVI no dependence": partial(fit_compvi, dependence_bound=None),
    "ComparativeVI no leakage bound": partial(fit_compvi, leakage_bound=None),
    "ComparativeVI no constraints": partial(
        fit_compvi, leakage_bound=None, dependence_bound=None, background_shift_bound=None
    ),
    "ComparativeVI 400-epoch KL warm-up": partial(
        fit_compvi, plan_kwargs={"n_epochs_kl_warmup": 400}
    ),
    "ComparativeVI mixture": partial(
        fit_compvi, prior="mixture", n_prior_components=N_MIXTURE_COMPONENTS
    ),
    "ComparativeVI conditional": partial(fit_compvi, prior="conditional"),
    "ComparativeVI sparse": partial(fit_compvi, prior="sparse"),
    "ComparativeVI sparse, true edge bound": partial(
        fit_compvi, prior="sparse", edge_bound=TRUE_EDGES
    ),
    "ContrastiveVI": fit_contrastivevi,
    "ContrastiveVI tuned": fit_contrastivevi,  # penalty set per configuration below
    "scVI pooled": fit_scvi_pooled,
    "PCA": fit_pca,
}

# Ablations of the fitting recipe run on the settings the identifiability claims are about.
ABLATIONS = [
    "ComparativeVI mgda",
    "ComparativeVI no background shift",
    "ComparativeVI no dependence",
    "ComparativeVI no leakage bound",
    "ComparativeVI no constraints",
    "ComparativeVI 400-epoch KL warm-up",
]

TIERS = {
    "smoke": {
        "configs": ["piecewise_affine 4+4"],
        "methods": ["ComparativeVI", "ContrastiveVI", "PCA"],
        "data_seeds": [0],
        "model_seeds": [0],
        "n_cells": 600,
        "n_genes": 100,
        "epochs": 15,
    },
    "full": {
        "configs": [c.label for c in CONFIGS],
        "methods": [m for m in METHODS if m not in ABLATIONS],
        "ablation_configs": ["piecewise_affine 4+4", "piecewise_affine 10+10"],
        "data_seeds": [0, 1],
        "model_seeds": [0, 1, 2],
        "n_cells": 2000,
        "n_genes": 200,
        "epochs": 100,
    },
    "priors": {
        "configs": [
            "mixture_screen 4+4",
            "conditional_screen 4+4",
            "sparse_screen 4+5",
            "sparse_screen 4+8 (surplus)",
        ],
        "methods": ["ComparativeVI", "ContrastiveVI"],
        "config_methods": {
            "mixture_screen 4+4": ["ComparativeVI mixture"],
            "conditional_screen 4+4": ["ComparativeVI conditional"],
            "sparse_screen 4+5": [
                "ComparativeVI sparse",
                "ComparativeVI sparse, true edge bound",
                "ComparativeVI conditional",
            ],
            "sparse_screen 4+8 (surplus)": [
                "ComparativeVI sparse",
                "ComparativeVI sparse, true edge bound",
            ],
        },
        "data_seeds": [0, 1],
        "model_seeds": [0, 1],
        "n_cells": 2000,
        "n_genes": 200,
        # What users run, with every model's default KL warm-up.
        "epochs": 100,
    },
}
# The disentanglement claims alone: the headline settings with every ablation.
TIERS["disentanglement"] = TIERS["full"] | {
    "configs": ["piecewise_affine 4+4", "piecewise_affine 10+10"],
    "methods": ["ComparativeVI", "ContrastiveVI"],
    "ablation_configs": ["piecewise_affine 10+10"],
}
TIERS["priors-smoke"] = TIERS["priors"] | {
    "configs": ["mixture_screen 4+4", "sparse_screen 4+8 (surplus)"],
    "data_seeds": [0],
    "model_seeds": [0],
    "n_cells": 600,
    "n_genes": 100,
    "epochs": 10,
}
# The prior matched to each screen of the priors tier, for its targets.
MATCHED_PRIOR = {
    "mixture_screen 4+4": "ComparativeVI mixture",
    "conditional_screen 4+4": "ComparativeVI conditional",
    "sparse_screen 4+5": "ComparativeVI sparse",
    "sparse_screen 4+8 (surplus)": "ComparativeVI sparse",
}
TUNING_DATA_SEED = 100


def _set_threads(n_threads: int) -> None:
    import torch

    torch.set_num_threads(n_threads)


def _run(job: dict) -> dict:
    """Fit one method on one data set; runs in a worker process."""
    config = next(c for c in CONFIGS if c.label == job["config"])
    adata = simulate_setting(
        config.setting, n_cells=job["n_cells"], n_genes=job["n_genes"], seed=job["data_seed"]
    )
    fit = METHODS[job["method"]](
        adata,
        n_background_latent=config.n_background_latent,
        n_salient_latent=config.n_salient_latent,
        max_epochs=job["epochs"],
        seed=job["model_seed"],
        **job.get("extra", {}),
    )
    settings = {k: v for k, v in job.get("extra", {}).items() if k != "plan_kwargs"}
    return {k: job[k] for k in ("config", "method", "data_seed", "model_seed")} | {
        **settings,
        **block_scores(adata, fit),
        "_salient": fit.salient,
    }


def _tuning_score(row: dict) -> float:
    # Oracle tuning on a held-out data seed, using the truth: favours ContrastiveVI.
    recovery = (row["background R²"] + row["salient R²"]) / 2
    return recovery - (row["leakage R² (s←b)"] + row["leakage R² (b←s)"]) / 2


def _map(executor, jobs):
    if executor is None:
        return [_run(job) for job in jobs]
    return list(executor.map(_run, jobs))


def run(tier: dict, executor) -> tuple[pd.DataFrame, dict[str, float]]:
    """Run every job of a tier; return per-run scores and the tuned ContrastiveVI penalties."""
    base = {k: tier[k] for k in ("n_cells", "n_genes", "epochs")}
    tuned = {}
    if "ContrastiveVI tuned" in tier["methods"]:
        tuning_jobs = [
            base
            | {
                "config": label,
                "method": "ContrastiveVI",
                "data_seed": TUNING_DATA_SEED,
                "model_seed": 0,
                "extra": {"wasserstein_penalty": penalty},
            }
            for label in tier["configs"]
            for penalty in CONTRASTIVE_PENALTY_GRID
        ]
        tuning = pd.DataFrame(_map(executor, tuning_jobs)).drop(columns="_salient")
        tuning["score"] = tuning.apply(_tuning_score, axis=1)
        best = tuning.loc[tuning.groupby("config")["score"].idxmax()]
        tuned = dict(zip(best["config"], best["wasserstein_penalty"], strict=True))
    jobs = []
    for label in tier["configs"]:
        ablations = ABLATIONS if label in tier.get("ablation_configs", []) else []
        specific = tier.get("config_methods", {}).get(label, [])
        for method in tier["methods"] + specific + ablations:
            extra = {"wasserstein_penalty": tuned[label]} if method.endswith("tuned") else {}
            if "plan_kwargs" in tier and method != "PCA":
                extra = extra | {"plan_kwargs": tier["plan_kwargs"]}
            seeds = tier["model_seeds"] if method != "PCA" else tier["model_seeds"][:1]
            for data_seed in tier["data_seeds"]:
                for model_seed in seeds:
                    job = base | {"config": label, "method": method, "data_seed": data_seed}
                    jobs.append(job | {"model_seed": model_seed, "extra": extra})
    scores = _with_every_metric(pd.DataFrame(_map(executor, jobs)))
    scores["salient seed stability"] = _seed_stability(scores)
    return scores.drop(columns="_salient"), tuned


def _with_every_metric(scores: pd.DataFrame) -> pd.DataFrame:
    """Add the metrics no run measured (e.g. graph SHD off sparse screens) as NaN columns."""
    missing = [metric for metric in METRICS if metric not in scores]
    return scores.reindex(columns=[*scores.columns, *missing])


def _seed_stability(scores: pd.DataFrame) -> pd.Series:
    """Per run, the mean MCC of its salient space with the other model seeds' on its data."""
    stability = pd.Series(np.nan, index=scores.index)
    for _, group in scores.groupby(["config", "method", "data_seed"]):
        if len(group) < 2:
            continue
        for index in group.index:
            others = [i for i in group.index if i != index]
            stability[index] = np.mean(
                [
                    seed_stability(scores.at[index, "_salient"], scores.at[i, "_salient"])
                    for i in others
                ]
            )
    return stability


def rotation_floors(tier: dict) -> pd.Series:
    """MCC of a random rotation of the true salient latents, per configuration."""
    floors = {}
    for label in tier["configs"]:
        config = next(c for c in CONFIGS if c.label == label)
        adata = simulate_setting(config.setting, n_cells=tier["n_cells"], n_genes=10, seed=0)
        true_s = adata.obsm["true_salient"]
        perturbed = (true_s != 0).any(axis=1)
        floors[label] = random_rotation_floor(true_s[perturbed], n_repeats=100)
    return pd.Series(floors, name="rotation floor MCC")


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over runs, and the worst run, per configuration and method.

    Metrics that no run of ``scores`` measured (e.g. graph SHD outside sparse screens) are
    left out.
    """
    metrics = [m for m in METRICS if m in scores and scores[m].notna().any()]
    grouped = scores.groupby(["config", "method"], sort=False)[metrics]
    mean, sd = grouped.mean(), grouped.std().fillna(0.0)
    worst = grouped.agg({m: ("max" if m.startswith(LOWER_IS_BETTER) else "min") for m in metrics})
    table = mean.copy().astype(object)
    for metric in metrics:
        for index in table.index:
            if np.isnan(mean.loc[index, metric]):
                table.loc[index, metric] = "n/a"
            else:
                table.loc[index, metric] = (
                    f"{mean.loc[index, metric]:.3f} ± {sd.loc[index, metric]:.3f} "
                    f"(worst {worst.loc[index, metric]:.3f})"
                )
    return table


def paired_differences(scores: pd.DataFrame, other: str = "ContrastiveVI") -> pd.DataFrame:
    """ComparativeVI minus another method on the same data and model seed."""
    keys = ["config", "data_seed", "model_seed"]
    ours = scores[scores["method"] == "ComparativeVI"].set_index(keys)[METRICS]
    theirs = scores[scores["method"] == other].set_index(keys)[METRICS]
    diff = (ours - theirs).dropna(how="all")
    rows = {}
    for config, group in diff.groupby(level="config", sort=False):
        row = {}
        for metric in ["background R²", "salient R²", *LEAKAGE_METRICS]:
            values = group[metric]
            better = values < 0 if metric.startswith(LOWER_IS_BETTER) else values > 0
            row[metric] = (
                f"{values.mean():+.3f} ± {values.std():.3f} ({better.sum()}/{len(values)})"
            )
        rows[config] = row
    return pd.DataFrame(rows).T


def prior_comparisons(scores: pd.DataFrame) -> pd.DataFrame:
    """The prior matched to each screen minus prior="normal" and ContrastiveVI, paired."""
    keys = ["config", "data_seed", "model_seed"]
    metrics = ["salient MCC", "salient MCC (Spearman)", "salient R²"]
    rows = {}
    for config, matched in MATCHED_PRIOR.items():
        sub = scores[scores["config"] == config]
        ours = sub[sub["method"] == matched].set_index(keys)[metrics]
        for other in ("ComparativeVI", "ContrastiveVI"):
            theirs = sub[sub["method"] == other].set_index(keys)[metrics]
            diff = (ours - theirs).dropna(how="all")
            if diff.empty:
                continue
            rows[(config, f"{matched} minus {other}")] = {
                metric: (
                    f"{diff[metric].mean():+.3f} ± {diff[metric].std():.3f} "
                    f"({(diff[metric] > 0).sum()}/{len(diff)})"
                )
                for metric in metrics
            }
    return pd.DataFrame(rows).T


def prior_targets(scores: pd.DataFrame) -> list[str]:
    """The issue's targets for the priors, each marked as holding or not."""
    lines = []
    for config, matched in MATCHED_PRIOR.items():
        runs = scores[(scores["config"] == config) & (scores["method"] == matched)]
        if runs.empty or config.endswith("(surplus)"):
            continue
        value = runs["salient MCC"].mean()
        lines.append(
            f"- {config}, {matched}: mean salient MCC {value:.3f} >= 0.95: "
            f"{'holds' if value >= 0.95 else 'missed'}"
        )
        if runs["graph SHD"].notna().any() if "graph SHD" in runs else False:
            shd = runs["graph SHD"].mean()
            lines.append(
                f"- {config}, {matched}: mean graph SHD {shd:.2f} <= 1 edge: "
                f"{'holds' if shd <= 1 else 'missed'}"
            )
    return lines


def targets(scores: pd.DataFrame) -> list[str]:
    """The targets for ComparativeVI defaults, each marked as holding or not."""
    lines = []
    ours = scores[scores["method"] == "ComparativeVI"]
    keys = ["config", "data_seed", "model_seed"]
    for label in ("piecewise_affine 4+4", "piecewise_affine 10+10"):
        runs = ours[ours["config"] == label]
        if runs.empty:
            continue
        for metric, bound, sense in [
            ("background R²", 0.93, ">="),
            ("salient R²", 0.93, ">="),
        ] + [(metric, 0.05, "<=") for metric in LEAKAGE_METRICS]:
            value = runs[metric].mean()
            holds = value >= bound if sense == ">=" else value <= bound
            lines.append(
                f"- {label}: mean {metric} {value:.3f} {sense} {bound}: "
                f"{'holds' if holds else 'missed'}"
            )
        pair = scores[scores["config"] == label]
        if {"ComparativeVI", "ContrastiveVI"} <= set(pair["method"]):
            a = pair[pair["method"] == "ComparativeVI"].set_index(keys)
            b = pair[pair["method"] == "ContrastiveVI"].set_index(keys)
            for metric in LEAKAGE_METRICS:
                wins = (a[metric] < b[metric]).sum()
                lines.append(
                    f"- {label}: ComparativeVI has lower {metric} than ContrastiveVI on "
                    f"{wins}/{len(a)} paired seeds: {'holds' if wins == len(a) else 'missed'}"
                )
    return lines


def plot(
    scores: pd.DataFrame,
    path: Path,
    metrics: list[str] | None = None,
    floors: pd.Series | None = None,
) -> None:
    """Scores by method, one row of panels per metric and one column per configuration.

    ``floors`` (the rotation floor of MCC per configuration) is drawn as a dashed line on
    the MCC panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = metrics or ["background R²", "salient R²", *LEAKAGE_METRICS]
    configs = list(dict.fromkeys(scores["config"]))
    methods = list(dict.fromkeys(scores["method"]))
    fig, axes = plt.subplots(
        len(metrics),
        len(configs),
        figsize=(3.2 * len(configs), 2.4 * len(metrics)),
        sharey="row",
        squeeze=False,
    )
    colors = plt.cm.tab10(np.arange(len(methods)))
    for j, config in enumerate(configs):
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            sub = scores[scores["config"] == config]
            for k, method in enumerate(methods):
                values = sub.loc[sub["method"] == method, metric].dropna()
                if values.empty:
                    continue
                ax.bar(
                    k, values.mean(), color=colors[k], yerr=values.std() if len(values) > 1 else 0
                )
                ax.scatter(np.full(len(values), k), values, s=6, color="black", zorder=3)
            if floors is not None and metric.startswith("salient MCC") and config in floors:
                ax.axhline(floors[config], color="grey", linestyle="--", linewidth=1)
            ax.set_xticks(
                range(len(methods)),
                methods if i == len(metrics) - 1 else [],
                rotation=60,
                ha="right",
                fontsize=7,
            )
            if j == 0:
                ax.set_ylabel(metric)
            if i == 0:
                ax.set_title(config, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=sorted(TIERS), default="smoke")
    parser.add_argument("--workers", type=int, default=1, help="parallel training processes")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument(
        "--configs", nargs="+", choices=[c.label for c in CONFIGS], help="subset of the tier"
    )
    parser.add_argument(
        "--runs", nargs="+", type=Path, help="report from saved identifiability_runs.csv files"
    )
    parser.add_argument("--data-seeds", type=int, nargs="+", help="subset of the tier's")
    parser.add_argument("--model-seeds", type=int, nargs="+", help="subset of the tier's")
    args = parser.parse_args()
    tier = TIERS[args.tier] | ({"configs": args.configs} if args.configs else {})
    for key in ("data_seeds", "model_seeds"):
        if getattr(args, key) is not None:
            tier[key] = getattr(args, key)
    out = args.out or {
        "full": RESULTS,
        "priors": RESULTS / "priors",
        "disentanglement": RESULTS / "disentanglement",
    }.get(args.tier)

    if args.runs:
        scores = _with_every_metric(
            pd.concat([pd.read_csv(path) for path in args.runs], ignore_index=True)
        )
        tier["configs"] = list(dict.fromkeys(scores["config"]))
        tuned_rows = scores[scores["method"] == "ContrastiveVI tuned"]
        tuned = (
            dict(zip(tuned_rows["config"], tuned_rows["wasserstein_penalty"], strict=True))
            if not tuned_rows.empty
            else {}
        )
    else:
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        executor = (
            ProcessPoolExecutor(
                args.workers,
                mp_context=get_context("spawn"),
                initializer=_set_threads,
                initargs=(threads,),
            )
            if args.workers > 1
            else None
        )
        scores, tuned = run(tier, executor)
        if executor is not None:
            executor.shutdown()
    floors = rotation_floors(tier)
    summary = summarize(scores)
    paired = paired_differences(scores) if "ContrastiveVI" in tier["methods"] else None
    priors = prior_comparisons(scores)
    lines = targets(scores) + prior_targets(scores)

    pd.set_option("display.width", 250)
    print(summary.to_string())
    print(floors.round(3).to_string())
    if paired is not None:
        print(
            "\nComparativeVI minus ContrastiveVI (mean ± sd; in brackets, paired seeds where "
            "ComparativeVI is better):"
        )
        print(paired.to_string())
    if not priors.empty:
        print("\nMatched prior minus the others (in brackets, paired seeds where it is higher):")
        print(priors.to_string())
    print("\n".join(lines))
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    if not args.runs:
        scores.to_csv(out / "identifiability_runs.csv", index=False)
    plot_metrics = (
        ["salient R²", "salient MCC", "salient MCC (Spearman)", "leakage R² (s←b)", "graph SHD"]
        if not priors.empty
        else None
    )
    plot(scores, out / "identifiability.png", plot_metrics, floors)
    settings = ", ".join(
        f"{k}={tier[k]}" for k in ("n_cells", "n_genes", "epochs", "plan_kwargs") if k in tier
    )
    text = [
        "# Identifiability benchmark",
        "",
        f"Command: `python benchmarks/identifiability.py {' '.join(sys.argv[1:])}`",
        "",
        f"Tier `{args.tier}`: {settings}, data seeds {tier['data_seeds']}, model seeds "
        f"{tier['model_seeds']}. Mean ± sd over runs (worst run). R² is the held-out affine R² "
        "of a true block from a learned block (higher is better); leakage R² is the same "
        "across blocks (lower is better), and kNN leakage R² reads it with a 15-nearest-"
        "neighbour regression instead of an affine map, so nonlinear leakage counts too; "
        "salient MCC is read against the rotation floor.",
        "",
        "## Targets",
        "",
        *lines,
        "",
        "## Scores",
        "",
        summary.to_markdown(),
        "",
        "## Floors",
        "",
        floors.round(3).to_frame().to_markdown(),
        "",
    ]
    if paired is not None:
        text += [
            "## ComparativeVI minus ContrastiveVI, paired by data and model seed",
            "",
            "Mean ± sd of the difference; in brackets, seeds on which ComparativeVI is better.",
            "",
            paired.to_markdown(),
            "",
        ]
    if not priors.empty:
        text += [
            "## Each screen's matched prior against prior='normal' and ContrastiveVI",
            "",
            "Paired by data and model seed: mean ± sd of the difference; in brackets, seeds "
            "on which the matched prior scores higher.",
            "",
            priors.to_markdown(),
            "",
        ]
    if tuned:
        text += [
            "ContrastiveVI tuned: `wasserstein_penalty` picked from "
            f"{list(CONTRASTIVE_PENALTY_GRID)} on data seed {TUNING_DATA_SEED} with the truth "
            f"(an oracle that favours ContrastiveVI): {tuned}.",
            "",
        ]
    text += ["![identifiability](identifiability.png)", ""]
    (out / "identifiability.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
