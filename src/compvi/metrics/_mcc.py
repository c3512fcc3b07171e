"""Mean correlation coefficient between true and learned latent components."""

from __future__ import annotations

from numbers import Integral
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

from .._docstrings import doc
from ._validation import as_matrix, check_same_rows

METHODS = ("pearson", "spearman")

# A correlation needs at least three points to be anything other than +-1.
_MIN_ROWS = 3


@doc.dedent
def mcc(
    true: ArrayLike,
    learned: ArrayLike,
    *,
    method: Literal["pearson", "spearman"] = "pearson",
) -> float:
    """Mean correlation coefficient (MCC) between true and learned latent components.

    The absolute correlations between every column of ``true`` and every column of
    ``learned`` are computed, each true column is matched to a distinct learned column so
    that the summed absolute correlation is maximal (Hungarian algorithm), and the matched
    absolute correlations are averaged. :func:`~compvi.metrics.match_factors` returns the
    matching itself.

    MCC measures component-wise recovery: it is 1 when every true component is recovered
    by one learned component up to scaling, sign and (for ``"spearman"``) any monotone
    map, whatever the order of the columns. It is *not* 0 for an unrelated representation:
    any mixture of the true components still correlates with them, e.g. a random rotation
    of a 4-dimensional isotropic latent scores about 0.77. Always read MCC against
    :func:`~compvi.metrics.random_rotation_floor`. A block identified only up to an
    affine map (see :func:`~compvi.metrics.affine_r2`) need not score above that floor.

    Parameters
    ----------
    %(true_factors)s
    learned
        Learned representation of the same cells, ``(n_cells, d_learned)`` with
        ``d_learned >= d_true``. A constant learned column carries no information and
        counts as correlation 0.
    method
        ``"pearson"`` (linear correlation) or ``"spearman"`` (rank correlation, invariant
        to monotone transforms of each column).

    Returns
    -------
    MCC in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from compvi.metrics import mcc
    >>> z = np.random.default_rng(0).normal(size=(500, 3))
    >>> round(mcc(z, -2.0 * z[:, [2, 0, 1]]), 6)
    1.0

    """
    _, matched_corr = _match(true, learned, method)
    return float(matched_corr.mean())


@doc.dedent
def match_factors(
    true: ArrayLike,
    learned: ArrayLike,
    *,
    method: Literal["pearson", "spearman"] = "pearson",
) -> np.ndarray:
    """Match each true latent component to its own learned component, as :func:`mcc` does.

    Each column of ``true`` is paired with a distinct column of ``learned`` so that the
    summed absolute correlation is maximal (Hungarian algorithm): the matching whose
    correlations :func:`~compvi.metrics.mcc` averages. Use it to line up anything indexed
    by factor, such as a learned perturbation -> factor graph (see
    :func:`~compvi.metrics.structural_hamming_distance`). A matching is only meaningful to
    the extent that the MCC exceeds :func:`~compvi.metrics.random_rotation_floor`.

    Parameters
    ----------
    %(true_factors)s
    learned
        Learned representation of the same cells, ``(n_cells, d_learned)`` with
        ``d_learned >= d_true``.
    method
        ``"pearson"`` (linear correlation) or ``"spearman"`` (rank correlation).

    Returns
    -------
    Integer array of length ``d_true``: entry ``j`` is the index of the learned column
    matched to true column ``j``. Learned columns not listed match no true component.

    Examples
    --------
    >>> import numpy as np
    >>> from compvi.metrics import match_factors
    >>> z = np.random.default_rng(0).normal(size=(500, 3))
    >>> match_factors(z, -2.0 * z[:, [2, 0, 1]]).tolist()
    [1, 2, 0]

    """
    matching, _ = _match(true, learned, method)
    return matching


@doc.dedent
def random_rotation_floor(
    true: ArrayLike,
    *,
    method: Literal["pearson", "spearman"] = "pearson",
    n_repeats: int = 10,
    random_state: int = 0,
) -> float:
    """MCC between a latent and uniformly random rotations of itself: the chance floor of MCC.

    A random rotation keeps all the information of ``true`` but none of its axes, so its
    :func:`~compvi.metrics.mcc` is what a model that recovers the latent only up to a
    rotation would score. An MCC is evidence of component recovery only to the extent that
    it exceeds this floor. The floor depends on the dimension (1 for one dimension, about
    0.77 for a 4-dimensional isotropic latent, decreasing with the dimension) and on the
    covariance of ``true``, which is why it is computed on the data rather than tabulated.

    Parameters
    ----------
    true
        Ground-truth latent, ``(n_cells, d)``; a 1-D array is one column.
    method
        Correlation passed to :func:`~compvi.metrics.mcc`.
    n_repeats
        Number of random rotations to average over. The MCC of a single rotation varies
        a lot (standard deviation about 0.07 at 4 dimensions), so the default gives the floor
        to within a few hundredths; increase it for a tighter estimate.
    random_state
        Seed of the rotations.

    Returns
    -------
    Mean MCC over ``n_repeats`` rotations drawn from the Haar (uniform) distribution.

    Examples
    --------
    >>> import numpy as np
    >>> from compvi.metrics import random_rotation_floor
    >>> z = np.random.default_rng(0).normal(size=(2000, 4))
    >>> 0.6 < random_rotation_floor(z) < 0.9
    True

    """
    true = as_matrix(true, "true")
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, Integral) or n_repeats < 1:
        raise ValueError(f"n_repeats must be a positive integer, got {n_repeats!r}.")
    rng = np.random.default_rng(random_state)
    d = true.shape[1]
    scores = []
    for _ in range(n_repeats):
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        # Fixing the signs of R's diagonal makes Q Haar-distributed rather than biased.
        q *= np.sign(np.diag(r))
        scores.append(mcc(true, true @ q, method=method))
    return float(np.mean(scores))


def _match(true: ArrayLike, learned: ArrayLike, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Check the inputs of :func:`mcc` and match their columns by absolute correlation.

    Returns the learned column matched to each true column and the matched absolute
    correlations.
    """
    true = as_matrix(true, "true")
    learned = as_matrix(learned, "learned")
    check_same_rows(_MIN_ROWS, true=true, learned=learned)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if learned.shape[1] < true.shape[1]:
        raise ValueError(
            f"learned must have at least as many columns as true to match each true "
            f"component to its own learned one, got {learned.shape[1]} learned and "
            f"{true.shape[1]} true columns; compare a subset of the true columns instead."
        )
    if (np.ptp(true, axis=0) == 0).any():
        raise ValueError(
            "true has constant columns, whose correlation is undefined; drop them or pass "
            "only the cells on which they vary (e.g. perturbed cells for a salient latent)."
        )

    if method == "spearman":
        true, learned = rankdata(true, axis=0), rankdata(learned, axis=0)
    abs_corr = np.abs(_standardise(true).T @ _standardise(learned)) / len(true)
    # With no more rows than columns, the row indices come back as 0, ..., d_true - 1.
    rows, cols = linear_sum_assignment(abs_corr, maximize=True)
    return cols, abs_corr[rows, cols]


def _standardise(x: np.ndarray) -> np.ndarray:
    """Centre and scale each column to unit variance; constant columns become zeros."""
    centred = x - x.mean(axis=0)
    # Test constancy on the raw values: centring a constant column in floating point can
    # leave rounding residue that scaling would blow up to unit variance.
    varying = np.ptp(x, axis=0) > 0
    out = np.zeros_like(centred)
    out[:, varying] = centred[:, varying] / centred[:, varying].std(axis=0)
    return out
