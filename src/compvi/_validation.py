"""Checks on user input that fail early with a message naming the field and the fix."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

# Log-normalized expression rarely exceeds this; raw UMI matrices almost always do.
_LOG_NORMALIZED_MAX = 20.0


def matrix_name(layer: str | None) -> str:
    """How the count matrix is written in messages: ``adata.X`` or ``adata.layers['...']``."""
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def get_matrix(adata: AnnData, layer: str | None):
    """Return the registered count matrix, with a clear error for an unknown layer."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"layer={layer!r} is not in adata.layers (available: {list(adata.layers)}). "
            "Pass layer=None to use adata.X."
        )
    return adata.layers[layer]


# Rows per chunk when scanning the counts: bounded memory for backed (on-disk) AnnData.
_CHUNK_ROWS = 10_000


def _value_chunks(matrix) -> Iterator[np.ndarray]:
    """Yield the stored values of the count matrix, a block of rows at a time.

    In-memory arrays, scipy sparse matrices and backed h5py/sparse datasets all slice by
    rows, so an on-disk matrix is never read into memory whole.
    """
    for start in range(0, matrix.shape[0], _CHUNK_ROWS):
        block = matrix[start : start + _CHUNK_ROWS]
        yield block.data if sparse.issparse(block) else np.asarray(block)


def _row_total_chunks(matrix) -> Iterator[np.ndarray]:
    for start in range(0, matrix.shape[0], _CHUNK_ROWS):
        yield np.asarray(matrix[start : start + _CHUNK_ROWS].sum(axis=1)).ravel()


def check_counts(adata: AnnData, layer: str | None) -> None:
    """Reject empty data and count matrices with NaN, infinite, negative or all-zero cells."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes); "
            "ComparativeVI needs cells and genes."
        )
    matrix = get_matrix(adata, layer)
    name = matrix_name(layer)
    for values in _value_chunks(matrix):
        if np.isnan(values).any():
            raise ValueError(f"{name} contains NaN; counts must be finite non-negative numbers.")
        if np.isinf(values).any():
            raise ValueError(f"{name} contains infinite values; counts must be finite.")
        if (values < 0).any():
            raise ValueError(
                f"{name} contains negative values; ComparativeVI models raw counts. "
                "Pass the raw UMI counts (e.g. layer='counts')."
            )
    n_empty = sum(int((totals == 0).sum()) for totals in _row_total_chunks(matrix))
    if n_empty:
        raise ValueError(
            f"{n_empty} cells have zero total counts in {name}; remove them first, e.g. "
            "with sc.pp.filter_cells(adata, min_counts=1)."
        )


def check_looks_like_counts(adata: AnnData, layer: str | None, gene_likelihood: str) -> None:
    """Refuse matrices that are clearly log-normalized, since count likelihoods cannot fit them."""
    all_integer, largest = True, -np.inf
    for values in _value_chunks(get_matrix(adata, layer)):
        if values.size:
            all_integer = all_integer and bool(np.all(np.mod(values, 1) == 0))
            largest = max(largest, float(values.max()))
    if all_integer:
        return
    if largest <= _LOG_NORMALIZED_MAX:
        raise ValueError(
            f"{matrix_name(layer)} holds non-integer values no larger than "
            f"{largest:.3g}: it looks log-normalized, which the {gene_likelihood!r} count "
            "likelihood cannot model. Register the raw counts with "
            "ComparativeVI.setup_anndata(adata, layer='counts', ...)."
        )


def _check_obs_key(adata: AnnData, key: str, argument: str) -> pd.Series:
    if key not in adata.obs.columns:
        raise KeyError(
            f"{argument}={key!r} is not a column of adata.obs "
            f"(columns: {list(adata.obs.columns)})."
        )
    column = adata.obs[key]
    n_missing = int(column.isna().sum())
    if n_missing:
        raise ValueError(
            f"adata.obs[{key!r}] ({argument}) has {n_missing} missing values; drop those cells "
            "or fill the values before setup."
        )
    return column


def normalize_control_category(control_category: str | Sequence[str]) -> list[str]:
    """Control labels as a list of strings, from one label or a list of labels."""
    labels = [control_category] if isinstance(control_category, str) else list(control_category)
    if not labels:
        raise ValueError("control_category must be a label or a non-empty list of labels.")
    return [str(label) for label in labels]


def check_condition(adata: AnnData, condition_key: str, control_category: list[str]) -> None:
    """Check the condition column, its control labels, and that both groups have cells."""
    column = _check_obs_key(adata, condition_key, "condition_key")
    values = column.astype(str)
    present = set(values.unique())
    missing = [label for label in control_category if label not in present]
    if missing:
        raise ValueError(
            f"control_category {missing} not found in adata.obs[{condition_key!r}], whose "
            f"values are {sorted(present)[:20]}. Pass the label(s) that mark control cells."
        )
    is_control = values.isin(control_category)
    if is_control.all():
        raise ValueError(
            f"Every cell of adata.obs[{condition_key!r}] is a control ({control_category}); "
            "ComparativeVI needs perturbed cells too."
        )
    if isinstance(column.dtype, pd.CategoricalDtype):
        empty = [c for c in column.cat.categories if c not in set(column.unique())]
        if empty:
            raise ValueError(
                f"adata.obs[{condition_key!r}] has categories with no cells: {empty[:10]}. "
                f"Drop them with adata.obs[{condition_key!r}] = "
                f"adata.obs[{condition_key!r}].cat.remove_unused_categories()."
            )


def check_known_conditions(adata: AnnData, condition_key: str, known: Sequence[str]) -> None:
    """Check that every condition of a new AnnData was registered when the model was trained."""
    column = _check_obs_key(adata, condition_key, "condition_key")
    unseen = sorted(set(column.astype(str).unique()) - {str(c) for c in known})
    if unseen:
        raise ValueError(
            f"adata.obs[{condition_key!r}] has conditions the model was not trained on: "
            f"{unseen[:10]}. The model has no prior for them and cannot tell whether they are "
            f"controls. Train on an AnnData that includes them, or keep only cells of the "
            f"trained conditions ({list(known)[:10]}...). Encoding does not read the label, "
            "so to embed new perturbations, label their cells with any trained perturbation in "
            "a copy of the AnnData."
        )


def check_covariates(
    adata: AnnData,
    batch_key: str | None,
    size_factor_key: str | None,
    categorical_covariate_keys: Sequence[str] | None,
    continuous_covariate_keys: Sequence[str] | None,
) -> None:
    """Check that every covariate column exists, has no missing values, and is valid."""
    if batch_key is not None:
        _check_obs_key(adata, batch_key, "batch_key")
    for key in categorical_covariate_keys or []:
        _check_obs_key(adata, key, "categorical_covariate_keys")
    for key in continuous_covariate_keys or []:
        column = _check_obs_key(adata, key, "continuous_covariate_keys")
        if not pd.api.types.is_numeric_dtype(column) or not np.isfinite(column).all():
            raise ValueError(
                f"adata.obs[{key!r}] (continuous_covariate_keys) must be finite numbers; "
                "register categorical columns with categorical_covariate_keys instead."
            )
    if size_factor_key is not None:
        column = _check_obs_key(adata, size_factor_key, "size_factor_key")
        if not pd.api.types.is_numeric_dtype(column) or not (column > 0).all():
            raise ValueError(
                f"adata.obs[{size_factor_key!r}] (size_factor_key) must hold positive numbers."
            )


def check_same_genes(adata: AnnData, model_var_names: Sequence[str]) -> None:
    """Require ``adata.var_names`` to equal the model's genes, in the same order."""
    model_var_names = pd.Index(np.asarray(model_var_names).astype(str))
    var_names = adata.var_names.astype(str)
    if var_names.equals(model_var_names):
        return
    missing = model_var_names.difference(var_names)
    extra = var_names.difference(model_var_names)
    if missing.empty and extra.empty:
        raise ValueError(
            "adata has the model's genes in another order; reorder it first with "
            "adata = adata[:, model_var_names].copy()."
        )
    raise ValueError(
        f"adata.var_names differ from the genes the model was trained on: "
        f"{len(missing)} missing (e.g. {list(missing[:5])}), {len(extra)} extra "
        f"(e.g. {list(extra[:5])}). Subset adata to the training genes, in training order."
    )
