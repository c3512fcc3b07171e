"""Recoverability of a true latent block from a learned one: affine and nearest-neighbour."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsRegressor

from .._docstrings import doc
from ._validation import as_matrix, check_same_rows

# Below this, a held-out split leaves too few rows to score an affine fit.
MIN_ROWS = 10


@doc.dedent
def affine_r2(
    true: ArrayLike,
    learned: ArrayLike,
    *,
    test_size: float = 0.3,
    random_state: int = 0,
) -> float:
    """Held-out :math:`R^2` of the best affine map from a learned latent block to a true one.

    A least-squares affine map ``learned -> true`` is fitted on a random subset of the rows
    and scored on the remaining ``test_size`` fraction. The :math:`R^2` of each column of
    ``true`` is computed on the held-out rows and the columns are averaged with equal
    weights. Columns of ``true`` that are constant on the held-out rows carry nothing to
    predict and are dropped.

    This is the block-wise identifiability score: a block identified up to an invertible
    affine map (what comparative VAEs with piece-wise affine decoders guarantee) scores
    close to 1. A learned block independent of ``true`` scores about 0; the score can be
    negative when the fitted map generalises worse than predicting the held-out mean.
    Scoring on held-out rows keeps wide ``learned`` blocks from scoring well by overfitting.

    Parameters
    ----------
    true
        Ground-truth latent, ``(n_cells, d_true)``; a 1-D array is one column.
    learned
        Learned representation of the same cells, ``(n_cells, d_learned)``; a 1-D array is
        one column.
    %(held_out_split)s

    Returns
    -------
    %(held_out_r2)s

    Examples
    --------
    >>> import numpy as np
    >>> from compvi.metrics import affine_r2
    >>> z = np.random.default_rng(0).normal(size=(500, 3))
    >>> round(affine_r2(z, z @ np.array([[2.0, 1, 0], [0, 1, 0], [0, 1, 3]]) + 5.0), 6)
    1.0

    """
    return _held_out_r2(LinearRegression(), true, learned, test_size, random_state)


@doc.dedent
def knn_r2(
    true: ArrayLike,
    learned: ArrayLike,
    *,
    n_neighbors: int = 15,
    test_size: float = 0.3,
    random_state: int = 0,
) -> float:
    """Held-out :math:`R^2` of a nearest-neighbour regression from a learned block to a true one.

    As :func:`affine_r2`, but the map ``learned -> true`` is the mean of the ``n_neighbors``
    nearest training rows (Euclidean distance in the learned space, as a neighbour graph or
    UMAP of the embedding uses it), so any smooth relation counts, not only an affine one.
    Used as a leakage score it sees what a nonlinear read-out of one block could take from
    the other: a learned background that carries a true salient factor bent by a
    nonlinearity scores near 0 with :func:`affine_r2` and well above 0 here.

    Parameters
    ----------
    true
        Ground-truth latent, ``(n_cells, d_true)``; a 1-D array is one column.
    learned
        Learned representation of the same cells, ``(n_cells, d_learned)``.
    n_neighbors
        Neighbours averaged per prediction.
    %(held_out_split)s

    Returns
    -------
    %(held_out_r2)s

    Examples
    --------
    >>> import numpy as np
    >>> from compvi.metrics import affine_r2, knn_r2
    >>> z = np.random.default_rng(0).uniform(-2, 2, size=(2000, 1))
    >>> round(affine_r2(z**2, z), 2), round(knn_r2(z**2, z), 2)
    (-0.0, 1.0)

    """
    if not (isinstance(n_neighbors, int | np.integer) and n_neighbors >= 1):
        raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors!r}.")
    regressor = KNeighborsRegressor(n_neighbors=int(n_neighbors))
    return _held_out_r2(regressor, true, learned, test_size, random_state)


def _held_out_r2(regressor, true, learned, test_size: float, random_state: int) -> float:
    """Fit ``regressor`` from ``learned`` to ``true`` on a split, score R² on the rest."""
    true = as_matrix(true, "true")
    learned = as_matrix(learned, "learned")
    check_same_rows(MIN_ROWS, true=true, learned=learned)
    if not (isinstance(test_size, float) and 0 < test_size < 1):
        raise ValueError(f"test_size must be a float in (0, 1), got {test_size!r}.")

    learned_train, learned_test, true_train, true_test = train_test_split(
        learned, true, test_size=test_size, random_state=random_state
    )
    if len(learned_train) < getattr(regressor, "n_neighbors", 1):
        raise ValueError(
            f"n_neighbors={regressor.n_neighbors} is more than the {len(learned_train)} "
            "training rows; pass more cells or fewer neighbours."
        )
    predicted = regressor.fit(learned_train, true_train).predict(learned_test)

    informative = np.ptp(true_test, axis=0) > 0
    if not informative.any():
        raise ValueError(
            "Every column of true is constant on the held-out rows, so there is nothing to "
            "predict; pass cells on which the true latent varies (e.g. perturbed cells only "
            "for a salient latent)."
        )
    true_test, predicted = true_test[:, informative], predicted[:, informative]
    residual = ((true_test - predicted) ** 2).sum(axis=0)
    total = ((true_test - true_test.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1 - residual / total))
