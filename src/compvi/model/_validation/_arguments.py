"""Checks on scalar and index arguments of the model's methods."""

from __future__ import annotations

import math

import numpy as np


# ------------------------------------------------------------ method arguments
def _is_integer(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def check_integer(value, name: str, *, minimum: int = 0, allow_none: bool = False) -> int | None:
    """Return ``value`` as an ``int`` (numpy integers accepted), or raise naming ``name``."""
    if value is None and allow_none:
        return None
    if not _is_integer(value) or value < minimum:
        none = "None or " if allow_none else ""
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise ValueError(f"{name} must be {none}{kind}, got {value!r}.")
    return int(value)


def check_number(
    value,
    name: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """Return ``value`` as a finite ``float`` in the given range, or raise naming ``name``.

    The range is ``[low, high]``, with an open end where ``low_open`` or ``high_open``.
    """
    if value is None and allow_none:
        return None
    valid = (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not valid:
        if math.isinf(low) and math.isinf(high):
            span = "a finite number"
        elif math.isinf(high):
            span = f"a finite number {'>' if low_open else '>='} {low:g}"
        elif math.isinf(low):
            span = f"a finite number {'<' if high_open else '<='} {high:g}"
        else:
            span = (
                f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
                f"{')' if high_open else ']'}"
            )
        none = "None or " if allow_none else ""
        raise ValueError(f"{name} must be {none}{span}, got {value!r}.")
    return float(value)


def check_indices(indices, n_obs: int, name: str = "indices") -> np.ndarray | None:
    """Cell positions from ``indices`` (integer positions or a boolean mask), checked.

    Returns ``None`` for ``None`` (every cell), else a 1-D integer array. A boolean mask must
    have one entry per cell; positions must lie in ``[0, n_obs)``: negative positions are
    refused rather than counted from the end, since scvi-tools' loaders do not read them.
    """
    if indices is None:
        return None
    array = np.asarray(indices)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D list of cell positions or a boolean mask, got an array of "
            f"shape {array.shape}."
        )
    if array.dtype == bool:
        if array.size != n_obs:
            raise ValueError(
                f"{name} is a boolean mask of length {array.size}, but adata has {n_obs} "
                "cells; pass one entry per cell."
            )
        array = np.flatnonzero(array)
    elif array.size == 0:
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integer cell positions or be a boolean mask, got values of "
            f"type {array.dtype}. To select cells by name, pass "
            "adata.obs_names.get_indexer(names)."
        )
    if array.size == 0:
        raise ValueError(f"{name} selects no cells; pass at least one cell position.")
    if array.min() < 0:
        raise ValueError(
            f"{name} has negative positions (e.g. {int(array.min())}); pass positions from 0 "
            f"to {n_obs - 1} (adata has {n_obs} cells)."
        )
    if array.max() >= n_obs:
        raise ValueError(
            f"{name} has positions up to {int(array.max())}, beyond the last cell "
            f"({n_obs - 1}; adata has {n_obs} cells)."
        )
    return array.astype(np.int64)


def check_train_arguments(
    *,
    max_epochs,
    batch_size,
    train_size,
    validation_size,
    early_stopping: bool,
) -> tuple[int | None, int]:
    """Refuse ``train`` arguments Lightning or the data splitter would misread.

    ``max_epochs=-1`` means "no limit" to Lightning (training would never end), and
    ``max_epochs=0`` leaves an untrained model marked as trained.

    Returns
    -------
    ``max_epochs`` and ``batch_size`` as Python ``int`` (Lightning asserts ``int`` and
    refuses numpy integers).

    """
    max_epochs = check_integer(max_epochs, "max_epochs", minimum=1, allow_none=True)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    check_number(train_size, "train_size", low=0, high=1, low_open=True)
    check_number(validation_size, "validation_size", low=0, high=1, allow_none=True)
    if validation_size is not None and train_size + validation_size > 1 + 1e-9:
        raise ValueError(
            f"train_size + validation_size must be at most 1, got {train_size} + "
            f"{validation_size}."
        )
    validation = 1 - train_size if validation_size is None else validation_size
    if early_stopping and validation <= 0:
        raise ValueError(
            f"early_stopping=True needs validation cells, but train_size={train_size} and "
            f"validation_size={validation_size} leave none. Pass train_size < 1 "
            "(e.g. train_size=0.9) or early_stopping=False."
        )
    return max_epochs, batch_size
