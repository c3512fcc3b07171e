"""Input checks shared by the metrics."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def as_matrix(x: ArrayLike, name: str) -> np.ndarray:
    """Return ``x`` as a finite float64 ``(n_cells, d)`` array; a 1-D input becomes one column."""
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array of shape (n_cells, d).") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(
            f"{name} must be an array of shape (n_cells, d) with d >= 1, got shape {x.shape}."
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; remove or impute them first.")
    return x


def check_same_rows(min_rows: int, **arrays: np.ndarray) -> int:
    """Check that all ``arrays`` have the same number of rows, at least ``min_rows``."""
    n_rows = {name: len(x) for name, x in arrays.items()}
    if len(set(n_rows.values())) > 1:
        described = ", ".join(f"{name} has {n}" for name, n in n_rows.items())
        raise ValueError(f"The inputs must have one row per cell, but {described} rows.")
    n = next(iter(n_rows.values()))
    if n < min_rows:
        raise ValueError(
            f"{' and '.join(n_rows)} must have at least {min_rows} rows (cells), got {n}."
        )
    return n
