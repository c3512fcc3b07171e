"""Baseline representations that learned spaces should beat."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from sklearn.decomposition import PCA


def log_counts_pca(counts: ArrayLike, n_components: int, *, random_state: int = 0) -> np.ndarray:
    """Principal components of ``log1p`` counts: the floor for block-wise affine R².

    A linear method on log counts recovers part of any latent block for free; a learned
    block's :func:`affine_r2` means something only above what these components reach.

    Parameters
    ----------
    counts
        Cells x genes counts, dense or sparse.
    n_components
        Number of components, at most ``min(n_cells, n_genes)``.
    random_state
        Seed of the randomized solver.

    Returns
    -------
    Array ``(n_cells, n_components)`` of principal-component scores.

    """
    dense = counts.toarray() if sparse.issparse(counts) else np.asarray(counts, dtype=float)
    if not 1 <= n_components <= min(dense.shape):
        raise ValueError(
            f"n_components must be between 1 and min(n_cells, n_genes) = {min(dense.shape)}, "
            f"got {n_components}."
        )
    return PCA(n_components=n_components, random_state=random_state).fit_transform(np.log1p(dense))
