"""ComparativeVI against scvi-tools' ContrastiveVI on the two real screens in ../shared/data.

Papalexi et al. 2021 (THP-1 CRISPR knock-outs): do the IFN-gamma pathway knock-outs (IFNGR1,
IFNGR2, JAK2, STAT1) share a salient direction, does SMAD4 take another, do the null
knock-outs CD86 and ATF2 stay near the controls? Kang et al. 2018 (PBMC ± IFN-beta): do cell
types separate and conditions mix in the background space, and does the salient space tell
stimulated cells from controls?

Every metric is computed the same way on both models' embeddings, from fits with the same
data, batch key, latent sizes, epochs and minibatch size.

    python benchmarks/real_data.py                 # both data sets, seeds 0 and 1
    python benchmarks/real_data.py --seeds 0 --papalexi-epochs 20 --kang-epochs 50
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
from _methods import Fit, fit_compvi, fit_contrastivevi
from sklearn.metrics import roc_auc_score, silhouette_score
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

import compvi
from compvi.model._responders import score_perturbations

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
PATHWAY = ["IFNGR1", "IFNGR2", "JAK2", "STAT1"]
NULLS = ["CD86", "ATF2"]
# Each piece of the fitting recipe turned off in turn (``--ablations``).
ABLATIONS = {
    "ComparativeVI mgda": {"balancing": "mgda"},
    "ComparativeVI no background shift": {"background_shift_bound": None},
    "ComparativeVI no dependence": {"dependence_bound": None},
    "ComparativeVI no leakage bound": {"leakage_bound": None},
    "ComparativeVI no constraints": {
        "leakage_bound": None,
        "dependence_bound": None,
        "background_shift_bound": None,
    },
    "ComparativeVI 400-epoch KL warm-up": {"plan_kwargs": {"n_epochs_kl_warmup": 400}},
}
ISGS = ["ISG15", "IFI6", "IFIT3", "IFIT1", "MX1", "LY6E", "ISG20", "IFITM3"]


def _dataset(name: str, data_dir: Path) -> dict:
    """Read one screen and name its condition, control label and batch key."""
    if name == "papalexi":
        path = data_dir / "papalexi2021_thp1_crispr.h5ad"
        spec = {"condition_key": "target", "control": "non-targeting", "batch_key": "bio_rep"}
    else:
        path = data_dir / "kang2018_pbmc_ifnb.h5ad"
        spec = {"condition_key": "group_id", "control": "ctrl", "batch_key": "donor"}
    adata = ad.read_h5ad(path)
    if name == "kang":
        # sample_id is condition x donor; the donor alone is the batch.
        adata.obs["donor"] = adata.obs["sample_id"].astype(str).str[-3:].astype("category")
    return {"adata": adata, **spec}


def ablation_slug(name: str) -> str:
    """Return an ablation's command-line name: ``no-dependence`` for its ``no dependence``."""
    return name.removeprefix("ComparativeVI ").replace(" ", "-")


def fit_both(
    data: dict, *, max_epochs: int, seed: int, ablations: list[str] | tuple[str, ...] = ()
) -> dict[str, Fit]:
    """Fit ComparativeVI (defaults, and the named ablations) and ContrastiveVI.

    All with 10 + 10 latents and 128 cells of each group per step.
    """
    common = {
        "max_epochs": max_epochs,
        "seed": seed,
        "condition_key": data["condition_key"],
        "control": data["control"],
        "batch_key": data["batch_key"],
    }
    variants = {"ComparativeVI": {}} | {
        name: kwargs for name, kwargs in ABLATIONS.items() if ablation_slug(name) in ablations
    }
    fits = {
        name: fit_compvi(data["adata"], **common, **train_kwargs)
        for name, train_kwargs in variants.items()
    }
    fits["ContrastiveVI"] = fit_contrastivevi(data["adata"], **common)
    return fits


def knn_accuracy(latent: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Balanced accuracy of a 15-nearest-neighbour classifier, 5-fold cross-validated."""
    classifier = KNeighborsClassifier(n_neighbors=15)
    order = np.random.default_rng(seed).permutation(len(labels))
    scores = cross_val_score(
        classifier, latent[order], labels[order], cv=5, scoring="balanced_accuracy"
    )
    return float(scores.mean())


def shift_cosines(salient: np.ndarray, labels: np.ndarray, control: np.ndarray) -> pd.DataFrame:
    """Cosine similarity between the perturbations' mean salient shifts from controls."""
    control_mean = salient[control].mean(0)
    targets = sorted(set(labels[~control]))
    shifts = np.stack([salient[labels == t].mean(0) - control_mean for t in targets])
    shifts /= np.linalg.norm(shifts, axis=1, keepdims=True)
    return pd.DataFrame(shifts @ shifts.T, index=targets, columns=targets)


def papalexi_scores(data: dict, fit: Fit) -> tuple[dict[str, float], pd.DataFrame]:
    """Pathway grouping, SMAD4 apartness, null knock-outs and per-target effect sizes."""
    adata = data["adata"]
    labels = adata.obs[data["condition_key"]].astype(str).to_numpy()
    control = labels == data["control"]
    salient = fit.salient
    cells, per_target = score_perturbations(salient, labels, control)
    cosines = shift_cosines(salient, labels, control)
    others = [t for t in cosines.index if t not in PATHWAY]
    # Is each pathway knock-out's most similar target another pathway knock-out?
    nearest_in_pathway = [cosines.loc[t].drop(t).idxmax() in PATHWAY for t in PATHWAY]
    effect = per_target["effect_size"]
    pathway_effect = effect[PATHWAY].median()
    scores = {
        "pathway cosine (within IFNGR1/IFNGR2/JAK2/STAT1)": np.mean(
            [cosines.loc[a, b] for a, b in combinations(PATHWAY, 2)]
        ),
        "pathway cosine to SMAD4": cosines.loc[PATHWAY, "SMAD4"].mean(),
        "pathway cosine to other targets": cosines.loc[PATHWAY, others].to_numpy().mean(),
        "pathway nearest neighbour in pathway": float(np.mean(nearest_in_pathway)),
        "CD86 effect / pathway median": effect["CD86"] / pathway_effect,
        "ATF2 effect / pathway median": effect["ATF2"] / pathway_effect,
        "null rank (CD86, ATF2) of 25": np.mean(
            [int((effect > effect[t]).sum()) + 1 for t in NULLS]
        ),
        "pathway responder fraction": per_target.loc[PATHWAY, "responder_fraction"].mean(),
        "null responder fraction": per_target.loc[NULLS, "responder_fraction"].mean(),
        "target kNN accuracy, background": knn_accuracy(fit.background, labels),
        "salient dimensions for 95% of perturbed cells' variance": salient_rank(salient[~control]),
        "s/epoch": fit.seconds_per_epoch,
    }
    if isinstance(fit.model, compvi.ComparativeVI):
        scores["SMAD4 responders: FN1 counterfactual log2 FC"] = smad4_fn1_change(
            fit.model, cells, labels
        )
    return scores, per_target


def salient_rank(salient: np.ndarray, share: float = 0.95) -> int:
    """How many principal directions hold ``share`` of the salient variance.

    One means every knock-out's shift lies on one axis, whatever its programme: cosines
    between shifts then read only their signs.
    """
    variances = np.linalg.svd(salient - salient.mean(0), compute_uv=False) ** 2
    return int(np.searchsorted(np.cumsum(variances) / variances.sum(), share) + 1)


def smad4_fn1_change(model: compvi.ComparativeVI, cells: pd.DataFrame, labels) -> float:
    """FN1's log2 fold change in SMAD4 responders against their own counterfactual.

    SMAD4's known programme lowers FN1 (pseudo-bulk log2 FC below -1): a salient space that
    holds SMAD4's programme shows it when the responders are decoded with and without their
    salient coordinates.
    """
    adata = model.adata
    responder = (labels == "SMAD4") & (cells["responder_probability"].to_numpy() >= 0.5)
    if responder.sum() < 2:
        return float("nan")
    adata.obs["_smad4_responder"] = pd.Categorical(np.where(responder, "yes", "no"))
    table = model.differential_expression(groupby="_smad4_responder", group1="yes", silent=True)
    del adata.obs["_smad4_responder"]
    return float(table.loc["FN1", "lfc_mean"])


def kang_scores(data: dict, fit: Fit) -> dict[str, float]:
    """Cell types vs conditions in each space."""
    adata = data["adata"]
    condition = adata.obs[data["condition_key"]].astype(str).to_numpy()
    cell_type = adata.obs["cluster_id"].astype(str).to_numpy()
    stimulated = condition != data["control"]
    background, salient = fit.background, fit.salient
    salient_norm = np.linalg.norm(salient, axis=1)
    return {
        "cell type kNN accuracy, background": knn_accuracy(background, cell_type),
        "cell type silhouette, background": float(silhouette_score(background, cell_type)),
        "condition kNN accuracy, background (0.5 = mixed)": knn_accuracy(background, condition),
        "condition kNN accuracy, salient": knn_accuracy(salient, condition),
        "salient norm AUROC stim vs ctrl": float(roc_auc_score(stimulated, salient_norm)),
        "control / stimulated salient norm": float(
            salient_norm[~stimulated].mean() / salient_norm[stimulated].mean()
        ),
        "s/epoch": fit.seconds_per_epoch,
    }


def isg_ranks(data: dict, model: compvi.ComparativeVI) -> dict[str, float]:
    """Where known interferon-stimulated genes rank in ComparativeVI's counterfactual DE."""
    table = model.differential_expression(silent=True)
    table = table.sort_values("lfc_mean", ascending=False)
    present = [g for g in ISGS if g in table.index]
    ranks = [table.index.get_loc(g) + 1 for g in present]
    return {f"{g} rank by LFC (of {len(table)})": r for g, r in zip(present, ranks, strict=True)}


def _table(rows: list[dict]) -> str:
    frame = pd.DataFrame(rows)
    summary = frame.groupby(["metric", "model"], sort=False)["value"].agg(["mean", "std"])
    wide = summary["mean"].unstack("model")
    spread = summary["std"].unstack("model")
    text = wide.map(lambda v: f"{v:.3f}") + spread.map(
        lambda v: "" if np.isnan(v) else f" ± {v:.3f}"
    )
    return text.to_markdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--datasets", nargs="+", default=["papalexi", "kang"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--papalexi-epochs", type=int, default=100)
    parser.add_argument("--kang-epochs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / "real_data.md")
    slugs = [ablation_slug(name) for name in ABLATIONS]
    parser.add_argument(
        "--ablations",
        nargs="*",
        choices=slugs,
        default=None,
        metavar="NAME",
        help=f"also fit these ablations of ComparativeVI (none named: all of {slugs})",
    )
    args = parser.parse_args(argv)
    ablations = [] if args.ablations is None else (args.ablations or slugs)
    missing = [
        name
        for name, file in (
            ("papalexi", "papalexi2021_thp1_crispr.h5ad"),
            ("kang", "kang2018_pbmc_ifnb.h5ad"),
        )
        if name in args.datasets and not (args.data_dir / file).is_file()
    ]
    if missing:
        raise SystemExit(
            f"Data for {missing} is not in {args.data_dir}; see ../shared/data/README.md "
            "(GEO GSE153056 and GSE96583) and pass --data-dir."
        )
    sections = ["# ComparativeVI vs ContrastiveVI on real screens\n"]
    sections.append(
        f"Command: `python benchmarks/real_data.py --seeds {' '.join(map(str, args.seeds))} "
        f"--papalexi-epochs {args.papalexi_epochs} --kang-epochs {args.kang_epochs}"
        f"{' --ablations ' + ' '.join(ablations) if ablations else ''} "
        f"--datasets {' '.join(args.datasets)}`. "
        "All models: 10 background + 10 salient latents, 128 cells of each group per step, "
        "the same batch key. Mean ± sd over seeds. The ISG ranks come from ComparativeVI's "
        "counterfactual differential expression, which ContrastiveVI lacks (nan).\n"
    )
    figure_data = {}
    for name in args.datasets:
        data = _dataset(name, args.data_dir)
        epochs = args.papalexi_epochs if name == "papalexi" else args.kang_epochs
        rows, per_target_tables = [], []
        for seed in args.seeds:
            fits = fit_both(data, max_epochs=epochs, seed=seed, ablations=ablations)
            for model_name, fit in fits.items():
                if name == "papalexi":
                    scores, per_target = papalexi_scores(data, fit)
                    per_target_tables.append(per_target.assign(model=model_name, seed=seed))
                    if model_name not in figure_data:
                        labels = data["adata"].obs[data["condition_key"]].astype(str)
                        figure_data[model_name] = shift_cosines(
                            fit.salient,
                            labels.to_numpy(),
                            (labels == data["control"]).to_numpy(),
                        )
                else:
                    scores = kang_scores(data, fit)
                    if isinstance(fit.model, compvi.ComparativeVI):
                        scores.update(isg_ranks(data, fit.model))
                rows += [
                    {"metric": k, "model": model_name, "seed": seed, "value": v}
                    for k, v in scores.items()
                ]
                print(name, seed, model_name, {k: round(float(v), 3) for k, v in scores.items()})
        sections.append(f"## {name}\n\n{_table(rows)}\n")
        if per_target_tables:
            effects = pd.concat(per_target_tables)
            mean_effect = effects.groupby([effects.index, "model"])["effect_size"].mean()
            fraction = effects.groupby([effects.index, "model"])["responder_fraction"].mean()
            per_target = pd.DataFrame(
                {"effect size": mean_effect, "responder fraction": fraction}
            ).unstack("model")
            per_target = per_target.sort_values(("effect size", "ComparativeVI"), ascending=False)
            sections.append(
                "Per knock-out: effect size (mean perturbation score, control SDs) and "
                "responder fraction, mean over seeds.\n\n"
                f"{per_target.round(2).to_markdown()}\n"
            )
    args.out.write_text("\n".join(sections))
    print(f"Wrote {args.out}")
    if figure_data:
        first = next(iter(figure_data.values()))
        order = [*PATHWAY, "SMAD4", *sorted(set(first.index) - {*PATHWAY, "SMAD4"})]
        fig, axes = plt.subplots(1, len(figure_data), figsize=(6.5 * len(figure_data), 5.5))
        for ax, (model_name, cosines) in zip(
            np.atleast_1d(axes), figure_data.items(), strict=True
        ):
            image = ax.imshow(cosines.loc[order, order], cmap="RdBu_r", vmin=-1, vmax=1)
            ax.set_xticks(range(len(order)), order, rotation=90, fontsize=7)
            ax.set_yticks(range(len(order)), order, fontsize=7)
            ax.set_title(
                f"{model_name}\ncosine of salient shifts (seed {args.seeds[0]})", fontsize=9
            )
        fig.colorbar(image, ax=axes, shrink=0.7)
        path = args.out.with_suffix(".png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        print(f"Wrote {path}")


if __name__ == "__main__":
    main()
