"""Agreement between two fits of the same model: a check that needs no ground truth."""

from __future__ import annotations

from typing import Literal

from numpy.typing import ArrayLike

from ._mcc import mcc
from ._validation import as_matrix, check_same_rows


def seed_stability(
    first: ArrayLike,
    second: ArrayLike,
    *,
    method: Literal["pearson", "spearman"] = "pearson",
) -> float:
    """MCC between the representations two fits (e.g. two seeds) give the same cells.

    An identifiable space comes out the same, up to the model's indeterminacy, from every
    fit; this score needs no ground truth, so it also works on real screens. Columns of
    ``first`` matched one-to-one to columns of ``second`` (Hungarian algorithm on absolute
    correlations) and their absolute correlations averaged, as :func:`mcc` does. Columns of
    ``first`` that are constant (fully collapsed latent dimensions) are left out.

    As with :func:`mcc`, a space identified only up to a rotation scores below 1 even when
    both fits found the same space; read it beside :func:`random_rotation_floor`.

    Parameters
    ----------
    first, second
        Learned representations of the same cells, ``(n_cells, d)`` each, ``second`` with
        at least as many columns as ``first`` has non-constant ones.
    method
        ``"pearson"`` or ``"spearman"``.

    Returns
    -------
    Stability in [0, 1]; 1 when the fits agree up to permutation, sign and scale of axes.

    """
    first = as_matrix(first, "first")
    second = as_matrix(second, "second")
    check_same_rows(3, first=first, second=second)
    varying = first.std(axis=0) > 0
    if not varying.any():
        raise ValueError("Every column of first is constant: there is nothing to compare.")
    return mcc(first[:, varying], second, method=method)
