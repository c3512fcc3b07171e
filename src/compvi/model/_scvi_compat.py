"""compvi's own versions of small scvi-tools internals, so that compvi does not import them.

scvi-tools keeps these in private modules (``scvi.model.base._save_load``,
``scvi.model.base._de_core``, ``scvi.model._utils``), which may change in any release.
Each function here does the same job with public API only, and is tested against a hand
computation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager

# Keys of the dictionary that scvi-tools' BaseModelClass.save writes to model.pt.
_ATTR_DICT, _VAR_NAMES = "attr_dict", "var_names"


def saved_model_path(dir_path: str | os.PathLike, prefix: str | None = None) -> Path:
    """Return the path of the ``model.pt`` that ``save(dir_path, prefix=prefix)`` wrote."""
    return Path(dir_path) / f"{prefix or ''}model.pt"


def read_saved_model(
    dir_path: str | os.PathLike, prefix: str | None = None
) -> tuple[dict, np.ndarray]:
    """Read the attributes and gene names of a model saved with ``save``, onto the CPU.

    Parameters
    ----------
    dir_path
        Folder the model was saved to.
    prefix
        The ``prefix`` passed to ``save``.

    Returns
    -------
    The saved attributes (``attr_dict``, with the registry under ``"registry_"``) and the
    training genes (``var_names``).

    Raises
    ------
    OSError
        ``model.pt`` is missing or unreadable.
    KeyError
        The file holds no ``attr_dict`` or ``var_names`` (not written by ``save``).

    """
    saved = torch.load(saved_model_path(dir_path, prefix), map_location="cpu", weights_only=False)
    if not isinstance(saved, dict):
        raise KeyError(f"model.pt holds a {type(saved).__name__}, not a saved model.")
    return saved[_ATTR_DICT], saved[_VAR_NAMES]


def fdr_de_prediction(posterior_probas: pd.Series, fdr: float = 0.05) -> pd.Series:
    """Flag as DE the most probable features whose posterior expected FDR is at most ``fdr``.

    Sorts the features by decreasing probability of being DE; the expected FDR of the
    ``k`` first is the mean of their probabilities of *not* being DE, which can only grow
    with ``k``; the largest ``k`` with an expected FDR of at most ``fdr`` are flagged. Ties
    keep the order of ``posterior_probas``.

    Parameters
    ----------
    posterior_probas
        Each feature's posterior probability of being DE.
    fdr
        Target posterior expected false discovery rate.

    Returns
    -------
    Booleans, indexed and ordered like ``posterior_probas``.

    """
    probas = np.asarray(posterior_probas, dtype=float)
    if probas.ndim != 1:
        raise ValueError("posterior_probas must be 1-dimensional.")
    order = np.argsort(-probas, kind="stable")
    expected_fdr = np.cumsum(1.0 - probas[order]) / np.arange(1, len(probas) + 1)
    flags = np.zeros(len(probas), dtype=bool)
    flags[order[: int((expected_fdr <= fdr).sum())]] = True
    return pd.Series(flags, index=posterior_probas.index)


def batch_codes(
    manager: AnnDataManager, categories: str | int | Sequence[str | int | None] | None
) -> list[int | None]:
    """Return the registered code of each batch category (``None`` stays ``None``).

    Raises
    ------
    ValueError
        A category that is not a registered batch.

    """
    if isinstance(categories, str) or not isinstance(categories, Sequence):
        categories = [categories]
    mapping = list(manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping)
    codes: list[int | None] = []
    for category in categories:
        if category is None:
            codes.append(None)
        elif category in mapping:
            codes.append(mapping.index(category))
        else:
            raise ValueError(
                f"{category!r} is not a valid batch category; the registered batches are "
                f"{mapping[:20]}."
            )
    return codes
