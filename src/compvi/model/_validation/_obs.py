"""Checks on obs columns: unique cell names, the condition and its controls, covariates."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._responders import MIN_CONTROL_CELLS


def check_unique_obs_names(adata: AnnData) -> None:
    """Refuse duplicated cell names: results indexed by ``obs_names`` would be ambiguous."""
    if adata.obs_names.is_unique:
        return
    duplicated = adata.obs_names[adata.obs_names.duplicated()].unique()
    raise ValueError(
        f"adata.obs_names has {len(duplicated)} duplicated cell names (e.g. "
        f"{list(duplicated[:5])}); results indexed by cell (differential expression, "
        "perturbation scores, subsets by name) would be ambiguous. Make them unique first "
        "with adata.obs_names_make_unique()."
    )


def check_obs_key(adata: AnnData, key: str, argument: str) -> pd.Series:
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
            "or fill the values first (before setup, or before passing adata to the model)."
        )
    return column


def _is_label(value) -> bool:
    """Tell a condition label: a string or an integer (not a bool, rarely meant)."""
    return isinstance(value, str | int | np.integer) and not isinstance(value, bool | np.bool_)


def normalize_control_category(control_category: str | int | Sequence[str | int]) -> list[str]:
    """Control labels as a list of strings, from one label or a list of labels.

    Integer labels (``control_category=0`` for a condition column of integers) are compared
    with the column's values as strings, like every label.
    """
    if _is_label(control_category):
        labels = [control_category]
    elif isinstance(control_category, Sequence | np.ndarray | pd.Index) and all(
        _is_label(label) for label in control_category
    ):
        labels = list(control_category)
    else:
        raise ValueError(
            "control_category must be a label (a string, or an integer for a column of "
            f"integers) or a list of labels, got {control_category!r}."
        )
    if not labels:
        raise ValueError("control_category must be a label or a non-empty list of labels.")
    return [str(label) for label in labels]


def _folded(label: str) -> str:
    return " ".join(label.split()).casefold()


def warn_near_duplicate_controls(
    labels: Sequence[str], control_category: Sequence[str], condition_key: str
) -> None:
    """Warn about labels that differ from a control label only by case or spaces.

    ``"control "`` or ``"Control"`` beside ``"control"`` are almost always typos, yet they
    would silently become perturbations.
    """
    controls = {_folded(c): c for c in control_category}
    near = sorted(
        {
            (label, controls[_folded(label)])
            for label in labels
            if label not in control_category and _folded(label) in controls
        }
    )
    if near:
        listed = ", ".join(f"{label!r} (like {control!r})" for label, control in near)
        warnings.warn(
            f"adata.obs[{condition_key!r}] has labels that differ from a control label only by "
            f"case or spaces: {listed}. They count as perturbations. If they are controls, "
            "fix the labels or add them to control_category.",
            UserWarning,
            stacklevel=3,
        )


def check_condition(adata: AnnData, condition_key: str, control_category: list[str]) -> None:
    """Check the condition column, its control labels, and that both groups have cells."""
    column = check_obs_key(adata, condition_key, "condition_key")
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
    if is_control.sum() < MIN_CONTROL_CELLS:
        raise ValueError(
            f"adata.obs[{condition_key!r}] has {int(is_control.sum())} control cell "
            f"({control_category}); ComparativeVI needs at least {MIN_CONTROL_CELLS} control "
            "cells (perturbation scores and differential expression compare perturbed cells "
            "with the controls' spread). Add control cells, or pass the label(s) of the "
            "control cells as control_category."
        )
    warn_near_duplicate_controls(present, control_category, condition_key)
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
    column = check_obs_key(adata, condition_key, "condition_key")
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
        check_obs_key(adata, batch_key, "batch_key")
    for key in categorical_covariate_keys or []:
        check_obs_key(adata, key, "categorical_covariate_keys")
    for key in continuous_covariate_keys or []:
        column = check_obs_key(adata, key, "continuous_covariate_keys")
        if not pd.api.types.is_numeric_dtype(column) or not np.isfinite(column).all():
            raise ValueError(
                f"adata.obs[{key!r}] (continuous_covariate_keys) must be finite numbers; "
                "register categorical columns with categorical_covariate_keys instead."
            )
    if size_factor_key is not None:
        column = check_obs_key(adata, size_factor_key, "size_factor_key")
        if not pd.api.types.is_numeric_dtype(column) or not (column > 0).all():
            raise ValueError(
                f"adata.obs[{size_factor_key!r}] (size_factor_key) must hold positive numbers."
            )


def check_distinct_keys(
    condition_key: str,
    batch_key: str | None,
    size_factor_key: str | None,
    categorical_covariate_keys: Sequence[str] | None,
    continuous_covariate_keys: Sequence[str] | None,
) -> None:
    """Refuse the condition column as a batch or covariate.

    Every network reads the batch and the covariates, so the condition would reach the
    background encoder and the decoder directly, and the salient space would have nothing
    left to explain.
    """
    for argument, keys in {
        "batch_key": [batch_key],
        "size_factor_key": [size_factor_key],
        "categorical_covariate_keys": list(categorical_covariate_keys or []),
        "continuous_covariate_keys": list(continuous_covariate_keys or []),
    }.items():
        if condition_key in keys:
            raise ValueError(
                f"condition_key={condition_key!r} is also in {argument}: every network reads "
                "the batch and the covariates, so the condition would reach them directly "
                "and the salient space would have nothing left to explain. Register batches "
                "and covariates with columns other than the condition."
            )


def warn_covariates_that_split_groups(
    condition: pd.Series, control_category: list[str], covariates: dict[str, pd.Series]
) -> None:
    """Warn about a categorical covariate none of whose values holds both groups.

    ``condition`` and each covariate are obs columns, matched on their index (the cells);
    ``covariates`` maps the argument that names a column (``"batch_key"``, say) to it. A
    column in which every value holds only control cells or only perturbed cells (a sample
    id that combines donor and condition, a lane per condition) tells the networks which
    group a cell is in, so the background space and the decoder can explain a perturbation
    as well as the salient space can.
    """
    control = condition.astype(str).isin(control_category)
    for argument, column in covariates.items():
        cells = column.index.intersection(control.index)
        groups = pd.crosstab(column.loc[cells].astype(str), control.loc[cells])
        if groups.shape[1] < 2 or (groups > 0).all(axis=1).any():
            continue
        warnings.warn(
            f"adata.obs[{column.name!r}] ({argument}) separates control from perturbed "
            "cells: each of its values holds only one group, so the model can explain a "
            "perturbation through it instead of the salient space. Register a column that "
            "varies within conditions (the donor rather than a donor-by-condition sample, "
            "say), or none.",
            UserWarning,
            stacklevel=3,
        )
