"""Recovery of a perturbation -> factor graph: structural Hamming distance after matching."""

from __future__ import annotations

from numbers import Real

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike


def structural_hamming_distance(
    true_graph: ArrayLike | pd.DataFrame,
    learned_graph: ArrayLike | pd.DataFrame,
    matching: ArrayLike,
    *,
    threshold: float = 0.5,
) -> dict[str, int]:
    """Count the edges a learned perturbation -> factor graph gets wrong.

    Learned factors come in an arbitrary order, so each true factor ``j`` is compared with
    the learned factor ``matching[j]``, typically from :func:`~compvi.metrics.match_factors`
    on the true and learned salient latents. A learned edge is an entry of
    ``learned_graph`` above ``threshold``.

    The structural Hamming distance (SHD) counts matched columns only: it is the number of
    true edges the matched learned factors lack plus the number of learned edges on them
    that the truth lacks. Learned factors that match no true factor (a model with more
    salient dimensions than the truth) are left out of the SHD; their edges are reported
    apart as ``"unmatched_edges"``, which says whether the surplus dimensions stay unused
    (0) or absorb perturbation effects.

    Parameters
    ----------
    true_graph
        True graph, ``(n_perturbations, d_true)``, 1 where a perturbation moves a factor
        and 0 elsewhere, e.g. ``adata.uns["simulation"]["salient_graph"]`` of
        :func:`~compvi.data.simulate_screen`. An array or a :class:`~pandas.DataFrame`.
    learned_graph
        Learned edge probabilities in [0, 1], ``(n_perturbations, d_learned)`` with
        ``d_learned >= d_true``, rows in the same perturbation order as ``true_graph``.
        If both graphs are DataFrames, their row labels must agree.
    matching
        Index of the learned column matched to each true column, length ``d_true``,
        without repeats.
    threshold
        Probability above which a learned entry is an edge, in (0, 1).

    Returns
    -------
    Dictionary of edge counts:

    ``"shd"``
        ``"missing"`` + ``"extra"``.
    ``"missing"``
        True edges absent from the matched learned columns.
    ``"extra"``
        Learned edges in the matched columns absent from the truth.
    ``"unmatched_edges"``
        Learned edges in the columns that match no true factor.

    Examples
    --------
    >>> import numpy as np
    >>> from compvi.metrics import structural_hamming_distance
    >>> true = np.array([[1, 0], [0, 1]])
    >>> learned = np.array([[0.1, 0.9, 0.0], [0.8, 0.7, 0.6]])
    >>> structural_hamming_distance(true, learned, [1, 0])
    {'shd': 1, 'missing': 0, 'extra': 1, 'unmatched_edges': 1}

    """
    true = _as_graph(true_graph, "true_graph")
    learned = _as_graph(learned_graph, "learned_graph")
    if not np.isin(true, (0, 1)).all():
        raise ValueError(
            "true_graph must contain only 0 (no edge) and 1 (edge); threshold it first if it "
            "holds probabilities."
        )
    if ((learned < 0) | (learned > 1)).any():
        raise ValueError(
            "learned_graph must hold edge probabilities in [0, 1], got values from "
            f"{learned.min():g} to {learned.max():g}."
        )
    if len(true) != len(learned):
        raise ValueError(
            f"true_graph and learned_graph must have one row per perturbation, in the same "
            f"order, got {len(true)} and {len(learned)} rows."
        )
    if (
        isinstance(true_graph, pd.DataFrame)
        and isinstance(learned_graph, pd.DataFrame)
        and not true_graph.index.equals(learned_graph.index)
    ):
        raise ValueError(
            "true_graph and learned_graph have different row labels; put the learned rows "
            "in the true order first, e.g. learned_graph.loc[true_graph.index]."
        )
    n_true, n_learned = true.shape[1], learned.shape[1]
    if n_learned < n_true:
        raise ValueError(
            f"learned_graph must have at least as many factor columns as true_graph to "
            f"match each true factor to its own, got {n_learned} and {n_true}."
        )
    matching = _check_matching(matching, n_true, n_learned)
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold!r}.")

    learned_edges = learned > threshold
    true_edges = true == 1
    matched = learned_edges[:, matching]
    missing = int((true_edges & ~matched).sum())
    extra = int((matched & ~true_edges).sum())
    unmatched = np.setdiff1d(np.arange(n_learned), matching)
    return {
        "shd": missing + extra,
        "missing": missing,
        "extra": extra,
        "unmatched_edges": int(learned_edges[:, unmatched].sum()),
    }


def _as_graph(graph: ArrayLike | pd.DataFrame, name: str) -> np.ndarray:
    """Return ``graph`` as a finite float64 ``(n_perturbations, n_factors)`` array."""
    try:
        values = np.asarray(graph, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a numeric array or DataFrame of shape (n_perturbations, n_factors)."
        ) from None
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(
            f"{name} must be 2-D, (n_perturbations, n_factors) with at least one of each, "
            f"got shape {values.shape}."
        )
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return values


def _check_matching(matching: ArrayLike, n_true: int, n_learned: int) -> np.ndarray:
    """Return ``matching`` as integer indices, one distinct learned column per true one."""
    values = np.asarray(matching)
    if values.shape != (n_true,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"matching must hold one integer learned-column index per true factor "
            f"({n_true}), got {matching!r}; compute it with "
            "compvi.metrics.match_factors(true_latent, learned_latent)."
        )
    if ((values < 0) | (values >= n_learned)).any() or len(np.unique(values)) < n_true:
        raise ValueError(
            f"matching must list distinct learned columns in 0, ..., {n_learned - 1}, "
            f"got {values.tolist()}."
        )
    return values
