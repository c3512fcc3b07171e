"""Fit each compared method on a simulated screen and return its latents and timing."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scvi
from anndata import AnnData

import compvi


@dataclass
class Fit:
    """Learned latents of one method on one data set."""

    background: np.ndarray
    salient: np.ndarray
    seconds: float
    epochs: int

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / self.epochs


def _quiet_trainer() -> dict:
    return {"enable_progress_bar": False, "enable_model_summary": False}


def fit_compvi(
    adata: AnnData,
    *,
    n_background_latent: int = 10,
    n_salient_latent: int = 10,
    max_epochs: int = 100,
    seed: int = 0,
    **train_kwargs,
) -> Fit:
    """ComparativeVI with its defaults unless ``train_kwargs`` say otherwise."""
    adata = adata.copy()
    scvi.settings.seed = seed
    compvi.ComparativeVI.setup_anndata(
        adata, condition_key="condition", control_category="control"
    )
    model = compvi.ComparativeVI(
        adata, n_background_latent=n_background_latent, n_salient_latent=n_salient_latent
    )
    start = time.perf_counter()
    model.train(max_epochs=max_epochs, **_quiet_trainer(), **train_kwargs)
    seconds = time.perf_counter() - start
    return Fit(
        background=model.get_latent_representation(representation_kind="background"),
        salient=model.get_latent_representation(),
        seconds=seconds,
        epochs=max_epochs,
    )


def fit_contrastivevi(
    adata: AnnData,
    *,
    n_background_latent: int = 10,
    n_salient_latent: int = 10,
    max_epochs: int = 100,
    seed: int = 0,
    wasserstein_penalty: float = 0.0,
) -> Fit:
    """scvi-tools' ContrastiveVI with its defaults, on the same control/perturbed split."""
    from scvi.external import ContrastiveVI

    adata = adata.copy()
    scvi.settings.seed = seed
    ContrastiveVI.setup_anndata(adata)
    model = ContrastiveVI(
        adata,
        n_background_latent=n_background_latent,
        n_salient_latent=n_salient_latent,
        wasserstein_penalty=wasserstein_penalty,
    )
    control = (adata.obs["condition"] == "control").to_numpy()
    start = time.perf_counter()
    model.train(
        background_indices=np.flatnonzero(control).tolist(),
        target_indices=np.flatnonzero(~control).tolist(),
        max_epochs=max_epochs,
        **_quiet_trainer(),
    )
    seconds = time.perf_counter() - start
    return Fit(
        background=model.get_latent_representation(representation_kind="background"),
        salient=model.get_latent_representation(representation_kind="salient"),
        seconds=seconds,
        epochs=max_epochs,
    )


def block_scores(adata: AnnData, fit: Fit) -> dict[str, float]:
    """Affine R² of each block and leakage R² across blocks against the simulated truth."""
    perturbed = (adata.obsm["true_salient"] != 0).any(axis=1)
    true_b, true_s = adata.obsm["true_background"], adata.obsm["true_salient"]
    leak = compvi.metrics.leakage(true_b, true_s, fit.background, fit.salient, perturbed)
    return {
        "background R²": compvi.metrics.affine_r2(true_b, fit.background),
        "salient R²": compvi.metrics.affine_r2(true_s[perturbed], fit.salient[perturbed]),
        "leakage R² (s←b)": leak["salient_from_background"],
        "leakage R² (b←s)": leak["background_from_salient"],
        "control salient norm": leak["control_salient_norm"],
        "s/epoch": fit.seconds_per_epoch,
    }
