"""Checks on the arguments of the simulators, with errors that name the argument."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
from numpy.typing import ArrayLike


def check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def check_positive_real(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < np.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")


def check_scale_range(scale_range: object) -> tuple[float, float]:
    message = (
        "salient_scale_range must be a pair (low, high) of finite numbers with "
        f"0 < low <= high, got {scale_range!r}; e.g. salient_scale_range=(0.5, 1.5)."
    )
    try:
        values = np.asarray(scale_range, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if values.shape != (2,) or not (np.isfinite(values[1]) and 0 < values[0] <= values[1]):
        raise ValueError(message)
    return float(values[0]), float(values[1])


def check_graph(graph: ArrayLike, n_perturbations: int, n_salient_latent: int) -> np.ndarray:
    try:
        values = np.asarray(graph, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            "salient_graph must be a 0/1 array of shape (n_perturbations, n_salient_latent), "
            f"got {graph!r}."
        ) from None
    if values.shape != (n_perturbations, n_salient_latent):
        raise ValueError(
            f"salient_graph must have one row per perturbation and one column per salient "
            f"factor, shape (n_perturbations, n_salient_latent) = ({n_perturbations}, "
            f"{n_salient_latent}), got shape {values.shape}."
        )
    if not np.isin(values, (0, 1)).all():
        raise ValueError(
            "salient_graph must contain only 0 (no edge) and 1 (edge), got the values "
            f"{np.unique(values).tolist()}; threshold edge probabilities first, e.g. "
            "(probabilities > 0.5).astype(int)."
        )
    return values.astype(np.int64)


def check_strengths(strength: float | Sequence[float], n_perturbations: int) -> np.ndarray:
    try:
        values = np.asarray(strength, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"perturbation_strength must be a number or a sequence of numbers, got {strength!r}."
        ) from None
    if values.ndim == 0:
        values = np.full(n_perturbations, values)
    elif values.shape != (n_perturbations,):
        raise ValueError(
            f"perturbation_strength must be a number or a sequence with one value per "
            f"perturbation (n_perturbations={n_perturbations}), got {len(values)} values."
        )
    if not (np.isfinite(values).all() and (values >= 0).all()):
        raise ValueError(
            f"perturbation_strength must be finite and non-negative (0 for a null "
            f"perturbation), got {values.tolist()}."
        )
    return values
