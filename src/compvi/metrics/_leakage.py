"""Leakage of information between the background and salient blocks."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._affine import MIN_ROWS, affine_r2, knn_r2
from ._validation import as_matrix, check_same_rows


def leakage(
    true_background: ArrayLike,
    true_salient: ArrayLike,
    learned_background: ArrayLike,
    learned_salient: ArrayLike,
    is_perturbed: ArrayLike,
    *,
    test_size: float = 0.3,
    random_state: int = 0,
) -> dict[str, float]:
    """Measure how much each learned block carries of the other block's true latent.

    The cross-block scores are computed on perturbed cells only, because on control cells
    the true salient latent is zero and there is nothing to leak.

    Parameters
    ----------
    true_background
        True background latent, ``(n_cells, d_b)``.
    true_salient
        True salient latent, ``(n_cells, d_s)``.
    learned_background
        Learned background representation, ``(n_cells, k_b)``.
    learned_salient
        Learned salient representation, ``(n_cells, k_s)``.
    is_perturbed
        Boolean mask, ``True`` for perturbed cells and ``False`` for control cells, e.g.
        ``(adata.obs["condition"] != "control").to_numpy()``.
    test_size
        Held-out fraction for the :func:`~compvi.metrics.affine_r2` scores.
    random_state
        Seed of the train/test split of the :func:`~compvi.metrics.affine_r2` scores.

    Returns
    -------
    Dictionary with

    ``"salient_from_background"``
        :func:`~compvi.metrics.affine_r2` of the true salient latent from the learned
        background, on perturbed cells. About 0 when the background block is free of
        salient signal; close to 1 when it has absorbed the salient latent.
    ``"background_from_salient"``
        :func:`~compvi.metrics.affine_r2` of the true background latent from the learned
        salient block, on perturbed cells. About 0 when the salient block carries no
        shared variation (cell type, cycle, batch); close to 1 when it does.
    ``"salient_from_background_knn"``, ``"background_from_salient_knn"``
        The same two scores with :func:`~compvi.metrics.knn_r2`, a nearest-neighbour
        read-out, so leakage through a nonlinear relation counts too.
    ``"control_salient_norm"``
        Mean Euclidean norm of the learned salient representation on control cells,
        divided by its mean norm on perturbed cells. Controls have no salient variation,
        so a clean model scores near 0; a score near 1 means the salient block does not
        tell controls from perturbed cells. Its reading depends on where the learned
        salient space is centred (a model whose salient prior is centred at 0 for controls
        is the intended case).

    Examples
    --------
    >>> from compvi.data import simulate_screen
    >>> from compvi.metrics import leakage
    >>> adata = simulate_screen(500, 50)
    >>> truth = adata.obsm["true_background"], adata.obsm["true_salient"]
    >>> scores = leakage(*truth, *truth, (adata.obs["condition"] != "control").to_numpy())
    >>> scores["salient_from_background"] < 0.1, scores["control_salient_norm"]
    (True, 0.0)

    """
    true_background = as_matrix(true_background, "true_background")
    true_salient = as_matrix(true_salient, "true_salient")
    learned_background = as_matrix(learned_background, "learned_background")
    learned_salient = as_matrix(learned_salient, "learned_salient")
    is_perturbed = np.asarray(is_perturbed)
    if is_perturbed.dtype != bool or is_perturbed.ndim != 1:
        raise ValueError(
            "is_perturbed must be a 1-D boolean array, e.g. "
            '(adata.obs["condition"] != "control").to_numpy().'
        )
    check_same_rows(
        MIN_ROWS,
        true_background=true_background,
        true_salient=true_salient,
        learned_background=learned_background,
        learned_salient=learned_salient,
        is_perturbed=is_perturbed,
    )
    if is_perturbed.all() or not is_perturbed.any():
        raise ValueError(
            "is_perturbed must mark both perturbed (True) and control (False) cells; "
            f"got {int(is_perturbed.sum())} perturbed of {len(is_perturbed)}."
        )

    norms = np.linalg.norm(learned_salient, axis=1)
    perturbed_norm = norms[is_perturbed].mean()
    if perturbed_norm == 0:
        raise ValueError(
            "learned_salient is zero on every perturbed cell, so control_salient_norm is "
            "undefined; check that the salient representation was extracted."
        )
    split = {"test_size": test_size, "random_state": random_state}
    return {
        "salient_from_background": affine_r2(
            true_salient[is_perturbed], learned_background[is_perturbed], **split
        ),
        "background_from_salient": affine_r2(
            true_background[is_perturbed], learned_salient[is_perturbed], **split
        ),
        "salient_from_background_knn": knn_r2(
            true_salient[is_perturbed], learned_background[is_perturbed], **split
        ),
        "background_from_salient_knn": knn_r2(
            true_background[is_perturbed], learned_salient[is_perturbed], **split
        ),
        "control_salient_norm": float(norms[~is_perturbed].mean() / perturbed_norm),
    }
