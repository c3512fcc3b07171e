"""Fit each compared method on a simulated screen and return its latents and timing."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData

import compvi


@dataclass
class Fit:
    """Learned latents of one method on one data set.

    Methods with a single latent space (pooled scVI, PCA) set both blocks to that space.
    ``graph`` (perturbation x factor edge probabilities) comes from ComparativeVI with the
    sparse prior, ``components`` (each cell's most likely component) from the mixture prior.
    """

    background: np.ndarray
    salient: np.ndarray
    seconds: float
    epochs: int
    two_blocks: bool = True
    model: object | None = None
    graph: pd.DataFrame | None = None
    components: np.ndarray | None = None

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / self.epochs if self.epochs else float("nan")


QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def fit_compvi(
    adata: AnnData,
    *,
    n_background_latent: int = 10,
    n_salient_latent: int = 10,
    max_epochs: int = 100,
    seed: int = 0,
    condition_key: str = "condition",
    control: str = "control",
    batch_key: str | None = None,
    prior: str = "normal",
    n_prior_components: int = 10,
    **train_kwargs,
) -> Fit:
    """ComparativeVI with its defaults unless the prior or ``train_kwargs`` say otherwise."""
    adata = adata.copy()
    scvi.settings.seed = seed
    compvi.ComparativeVI.setup_anndata(
        adata, condition_key=condition_key, control_category=control, batch_key=batch_key
    )
    model = compvi.ComparativeVI(
        adata,
        n_background_latent=n_background_latent,
        n_salient_latent=n_salient_latent,
        prior=prior,
        n_prior_components=n_prior_components,
    )
    start = time.perf_counter()
    model.train(max_epochs=max_epochs, **QUIET, **train_kwargs)
    seconds = time.perf_counter() - start
    return Fit(
        background=model.get_latent_representation(representation_kind="background"),
        salient=model.get_latent_representation(),
        seconds=seconds,
        epochs=max_epochs,
        model=model,
        graph=model.get_perturbation_graph() if prior == "sparse" else None,
        components=(
            model.get_component_responsibilities().to_numpy().argmax(1)
            if prior == "mixture"
            else None
        ),
    )


def fit_contrastivevi(
    adata: AnnData,
    *,
    n_background_latent: int = 10,
    n_salient_latent: int = 10,
    max_epochs: int = 100,
    seed: int = 0,
    wasserstein_penalty: float = 0.0,
    condition_key: str = "condition",
    control: str = "control",
    batch_key: str | None = None,
    plan_kwargs: dict | None = None,
) -> Fit:
    """scvi-tools' ContrastiveVI with its defaults, on the same control/perturbed split."""
    from scvi.external import ContrastiveVI

    adata = adata.copy()
    scvi.settings.seed = seed
    ContrastiveVI.setup_anndata(adata, batch_key=batch_key)
    model = ContrastiveVI(
        adata,
        n_background_latent=n_background_latent,
        n_salient_latent=n_salient_latent,
        wasserstein_penalty=wasserstein_penalty,
    )
    is_control = (adata.obs[condition_key] == control).to_numpy()
    start = time.perf_counter()
    model.train(
        background_indices=np.flatnonzero(is_control).tolist(),
        target_indices=np.flatnonzero(~is_control).tolist(),
        max_epochs=max_epochs,
        plan_kwargs=plan_kwargs,
        **QUIET,
    )
    seconds = time.perf_counter() - start
    return Fit(
        background=model.get_latent_representation(representation_kind="background"),
        salient=model.get_latent_representation(representation_kind="salient"),
        seconds=seconds,
        epochs=max_epochs,
        model=model,
    )


def fit_scvi_pooled(
    adata: AnnData,
    *,
    n_background_latent: int = 10,
    n_salient_latent: int = 10,
    max_epochs: int = 100,
    seed: int = 0,
) -> Fit:
    """scVI on all cells pooled, one latent space of the two blocks' total size."""
    adata = adata.copy()
    scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(adata)
    model = scvi.model.SCVI(adata, n_latent=n_background_latent + n_salient_latent)
    start = time.perf_counter()
    model.train(max_epochs=max_epochs, batch_size=256, **QUIET)
    seconds = time.perf_counter() - start
    latent = model.get_latent_representation()
    return Fit(latent, latent, seconds, max_epochs, two_blocks=False)


def fit_pca(
    adata: AnnData, *, n_background_latent: int = 10, n_salient_latent: int = 10, **_
) -> Fit:
    """PCA of log1p counts with as many components as both blocks together."""
    start = time.perf_counter()
    latent = compvi.metrics.log_counts_pca(adata.X, n_background_latent + n_salient_latent)
    return Fit(latent, latent, time.perf_counter() - start, 0, two_blocks=False)


def block_scores(adata: AnnData, fit: Fit) -> dict[str, float]:
    """Affine R² of each block, leakage R² across blocks, and salient MCC against the truth.

    For single-space methods the leakage entries are NaN: they have no blocks to leak between.
    On screens simulated with a perturbation -> factor graph, the learned factors are matched
    to the true ones by MCC; the scores then include the fraction of the perturbed cells'
    salient variance in unmatched (surplus) factors and, for a fit with a graph, its
    structural Hamming distance. On mixture screens, a fit with components scores their
    adjusted Rand index against the true components.
    """
    perturbed = (adata.obsm["true_salient"] != 0).any(axis=1)
    true_b, true_s = adata.obsm["true_background"], adata.obsm["true_salient"]
    scores = {
        "background R²": compvi.metrics.affine_r2(true_b, fit.background),
        "salient R²": compvi.metrics.affine_r2(true_s[perturbed], fit.salient[perturbed]),
        "leakage R² (s←b)": np.nan,
        "leakage R² (b←s)": np.nan,
        "kNN leakage R² (s←b)": np.nan,
        "kNN leakage R² (b←s)": np.nan,
        "control salient norm": np.nan,
        "salient MCC": compvi.metrics.mcc(true_s[perturbed], fit.salient[perturbed]),
        "salient MCC (Spearman)": compvi.metrics.mcc(
            true_s[perturbed], fit.salient[perturbed], method="spearman"
        ),
        "s/epoch": fit.seconds_per_epoch,
    }
    true_graph = adata.uns["simulation"].get("salient_graph")
    if true_graph is not None and fit.two_blocks:
        matching = compvi.metrics.match_factors(true_s[perturbed], fit.salient[perturbed])
        variance = fit.salient[perturbed].var(axis=0)
        surplus = np.setdiff1d(np.arange(variance.size), matching)
        scores["surplus variance share"] = variance[surplus].sum() / variance.sum()
        if fit.graph is not None:
            shd = compvi.metrics.structural_hamming_distance(
                np.asarray(true_graph), fit.graph.to_numpy(), matching
            )
            scores["graph SHD"] = shd["shd"]
            scores["surplus edges"] = shd["unmatched_edges"]
    if fit.components is not None and "true_component" in adata.obs:
        from sklearn.metrics import adjusted_rand_score

        labels = adata.obs["true_component"].to_numpy()
        scores["component ARI"] = adjusted_rand_score(labels[perturbed], fit.components[perturbed])
    if fit.two_blocks:
        leak = compvi.metrics.leakage(true_b, true_s, fit.background, fit.salient, perturbed)
        scores["leakage R² (s←b)"] = leak["salient_from_background"]
        scores["leakage R² (b←s)"] = leak["background_from_salient"]
        scores["kNN leakage R² (s←b)"] = leak["salient_from_background_knn"]
        scores["kNN leakage R² (b←s)"] = leak["background_from_salient_knn"]
        scores["control salient norm"] = leak["control_salient_norm"]
    return scores
