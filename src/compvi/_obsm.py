"""Reading the representations that :meth:`compvi.ComparativeVI.add_results` stores."""

from __future__ import annotations

import numpy as np
from anndata import AnnData


def stored_representation(adata: AnnData, key: str, kind: str) -> np.ndarray:
    """Return ``adata.obsm[key]`` as a 2-D float array, or say how to store it there.

    ``kind`` is the representation's name (``"salient"`` or ``"background"``), used in the
    error message.
    """
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
