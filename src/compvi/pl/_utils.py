"""Helpers shared by the plots of :mod:`compvi.pl`."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.figure import Figure


def _embedding(adata: AnnData, key: str, kind: str) -> np.ndarray:
    """Return ``adata.obsm[key]`` as a 2-D float array, or say how to store it there."""
    if key not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {key!r}. Run model.add_results(adata) first, or store the "
            f"{kind} representation yourself: adata.obsm[{key!r}] = "
            f"model.get_latent_representation(representation_kind={kind!r})."
        )
    values = np.asarray(adata.obsm[key], dtype=float)
    if values.ndim != 2:
        raise ValueError(f"adata.obsm[{key!r}] must be 2-D, got shape {values.shape}.")
    return values


def _finish(fig: Figure, show: bool | None, save: str | Path | None) -> None:
    """Save and show ``fig`` as scanpy does: show unless saved, when ``show`` is ``None``."""
    if save is not None:
        fig.savefig(save, bbox_inches="tight")
    if show or (show is None and save is None):
        plt.show()
