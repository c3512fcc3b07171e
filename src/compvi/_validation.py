"""Checks on user input that fail early with a message naming the field and the fix."""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from ._responders import MIN_CONTROL_CELLS
from ._row_blocks import row_blocks, row_totals, stored_values

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


# The largest count accepted: int32's maximum. No UMI or read count of one gene in one cell
# comes near it, so a larger value means a wrong matrix (scaled, summed or corrupted). The
# loader hands the model float32, which holds integers exactly only up to 2**24, and the
# float32 training breaks further up: with the Poisson likelihood the squared gradients of
# the MGDA weight overflow from about 1e19 (the loss turns NaN), and any likelihood fails
# once a count or a cell's total exceeds float32's maximum (3.4e38).
_MAX_COUNT = 2**31 - 1


def check_counts(adata: AnnData, layer: str | None) -> None:
    """Reject empty data and count matrices with NaN, infinite, negative, huge or all-zero cells.

    Also rejects scipy sparse *arrays* (``csr_array``), which scvi-tools' count check cannot
    read (it fails with ``TypeError: data type not understood``).
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes); "
            "ComparativeVI needs cells and genes."
        )
    matrix = get_matrix(adata, layer)
    name = matrix_name(layer)
    if sparse.issparse(matrix) and not isinstance(matrix, sparse.spmatrix):
        raise ValueError(
            f"{name} is a scipy sparse array ({type(matrix).__name__}), which scvi-tools "
            f"cannot register; convert it to a sparse matrix first: "
            f"{name} = scipy.sparse.csr_matrix({name})."
        )
    n_empty = 0
    for block in row_blocks(matrix):
        values = stored_values(block)
        if np.isnan(values).any():
            raise ValueError(f"{name} contains NaN; counts must be finite non-negative numbers.")
        if np.isinf(values).any():
            raise ValueError(f"{name} contains infinite values; counts must be finite.")
        if (values < 0).any():
            raise ValueError(
                f"{name} contains negative values; ComparativeVI models raw counts. "
                "Pass the raw UMI counts (e.g. layer='counts')."
            )
        if values.size and values.max() > _MAX_COUNT:
            raise ValueError(
                f"{name} contains counts up to {float(values.max()):.4g}, above 2**31 - 1 "
                "(int32's maximum), which no gene reaches in one cell and which float32 "
                "training cannot represent exactly; pass the raw UMI counts (e.g. "
                "layer='counts'), not scaled or summed values."
            )
        n_empty += int((row_totals(block) == 0).sum())
    if n_empty:
        raise ValueError(
            f"{n_empty} cells have zero total counts in {name}; remove them first, e.g. "
            "with sc.pp.filter_cells(adata, min_counts=1)."
        )


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


def check_looks_like_counts(
    adata: AnnData, layer: str | None, gene_likelihood: str | None = None
) -> None:
    """Refuse matrices that are clearly log-normalized, since count likelihoods cannot fit them.

    Counts off integers by rounding noise only (``counts + 1e-7`` after a float32 round trip
    or an undone normalization) are counts: they pass here whatever their largest value, and
    scvi-tools' setup warns that they are not integers (the likelihoods accept them).
    """
    all_integer, largest = True, -np.inf
    for block in row_blocks(get_matrix(adata, layer)):
        values = stored_values(block)
        if values.size:
            # Tolerant comparison: rounding noise is relative to the value (float32's epsilon
            # is 1.2e-7), and log-normalized values sit far from integers.
            near = np.isclose(values, np.round(values), rtol=1e-6, atol=1e-4)
            all_integer = all_integer and bool(np.all(near))
            largest = max(largest, float(values.max()))
    if all_integer:
        return
    if largest <= _LOG_NORMALIZED_MAX:
        likelihood = "count" if gene_likelihood is None else f"{gene_likelihood!r} count"
        raise ValueError(
            f"{matrix_name(layer)} holds non-integer values no larger than "
            f"{largest:.3g}: it looks log-normalized, which the {likelihood} "
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


def check_same_genes(
    adata: AnnData | MuData, model_var_names: Sequence[str] | Mapping, *, reorder: bool = False
) -> AnnData | MuData:
    """Require ``adata.var_names`` to be the model's genes, in the training order.

    Parameters
    ----------
    adata
        The AnnData to check; it is never modified.
    model_var_names
        The genes the model was trained on, in training order.
    reorder
        Accept the same genes in another order and return a copy of ``adata`` with the
        genes put in training order (what :meth:`ComparativeVI.load` does, once). Otherwise
        such an AnnData raises: encoding it as is would silently feed each gene's counts to
        another gene's weights.

    Returns
    -------
    ``adata`` itself when its genes are in training order, else (``reorder=True``) the
    reordered copy.

    """
    if isinstance(model_var_names, Mapping):
        # A model set up with setup_mudata saves its features per modality.
        check_same_modality_genes(adata, model_var_names)
        return adata
    model_var_names = pd.Index(np.asarray(model_var_names).astype(str))
    var_names = adata.var_names.astype(str)
    if var_names.equals(model_var_names):
        return adata
    missing = model_var_names.difference(var_names)
    extra = var_names.difference(model_var_names)
    if missing.empty and extra.empty and var_names.is_unique and model_var_names.is_unique:
        if reorder:
            return adata[:, var_names.get_indexer(model_var_names)].copy()
        raise ValueError(
            "adata has the model's genes in another order, so each gene's counts would meet "
            "another gene's weights; put them in training order first with "
            "adata = adata[:, model.adata.var_names].copy() (ComparativeVI.load does this "
            "itself)."
        )
    raise ValueError(
        f"adata.var_names differ from the genes the model was trained on: "
        f"{len(missing)} missing (e.g. {list(missing[:5])}), {len(extra)} extra "
        f"(e.g. {list(extra[:5])}). Subset adata to the training genes, in training order."
    )


def check_saved_model_class(dir_path: str, saved_registry: Mapping, model_class: str) -> None:
    """Refuse a folder saved by another scvi-tools model class, naming the class to load it with.

    scvi-tools records the saving class in ``registry["model_name"]`` and refuses a mismatch
    only with "It appears you are loading a model from a different class.", after it has
    already registered the AnnData with the wrong class.
    """
    saved = saved_registry.get("model_name")
    if saved is None or saved == model_class:
        return
    # Name the class with its import path when it is one of scvi-tools' own.
    loader = saved
    for namespace in ("model", "external"):
        if hasattr(getattr(scvi, namespace), saved):
            loader = f"scvi.{namespace}.{saved}"
            break
    raise ValueError(
        f"{dir_path} holds a {saved} model, not a {model_class}; load it with "
        f"{loader}.load({str(dir_path)!r}, adata=...)."
    )


def check_unique_var_names(adata: AnnData) -> None:
    """Refuse duplicated gene names: results indexed by gene would be ambiguous."""
    if adata.var_names.is_unique:
        return
    duplicated = adata.var_names[adata.var_names.duplicated()].unique()
    raise ValueError(
        f"adata.var_names has {len(duplicated)} duplicated gene names (e.g. "
        f"{list(duplicated[:5])}); results indexed by gene (normalized expression, "
        "differential expression, top genes of the perturbation scores) would be ambiguous. "
        "Make them unique first with adata.var_names_make_unique()."
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


# --------------------------------------------------------------------- queries
def registered_categories(registry: Mapping) -> dict[str, dict[str, list[str]]]:
    """Categories of the batch and categorical covariates a model was registered with.

    Returns ``{argument: {obs key: categories}}`` for ``batch_key`` and
    ``categorical_covariate_keys``, from a registry (``model.adata_manager.registry`` or the
    one saved with a model).
    """
    fields = registry["field_registries"]
    setup_args = registry["setup_args"]
    known: dict[str, dict[str, list[str]]] = {}
    batch = fields.get("batch", {}).get("state_registry", {})
    if setup_args.get("batch_key") is not None and "categorical_mapping" in batch:
        known["batch_key"] = {
            setup_args["batch_key"]: [str(c) for c in batch["categorical_mapping"]]
        }
    covariates = fields.get("extra_categorical_covs", {}).get("state_registry", {})
    if covariates.get("mappings"):
        known["categorical_covariate_keys"] = {
            key: [str(c) for c in categories] for key, categories in covariates["mappings"].items()
        }
    return known


def check_known_categories(
    adata: AnnData, argument: str, categories: Mapping[str, Sequence[str]]
) -> None:
    """Refuse batch or covariate categories the model was not trained with."""
    for key, known in categories.items():
        column = _check_obs_key(adata, key, argument)
        unseen = sorted(set(column.astype(str).unique()) - set(known))
        if unseen:
            raise ValueError(
                f"adata.obs[{key!r}] ({argument}) has categories the model was not trained "
                f"with: {unseen[:10]}. The model has no weights for them; keep only cells of "
                f"the trained categories ({list(known)[:10]})."
            )


def check_query(
    adata: AnnData | MuData, registry: Mapping, gene_likelihood: str | None = None
) -> None:
    """Run the checks of setup on an AnnData (or MuData) given to a trained model.

    Run by every query with a new AnnData (``get_*``, scores, DE, ``add_results``) and by
    :meth:`ComparativeVI.load`, before scvi-tools transfers the registration, so a refused
    AnnData is left as it was. Unlike setup, the AnnData may hold controls only or
    perturbed cells only, but every condition, batch and covariate category must be one the
    model was trained with.
    """
    setup_args = registry["setup_args"]
    is_mudata = isinstance(adata, MuData)
    with located("mdata" if is_mudata else "adata"):
        check_unique_obs_names(adata)
    counts, layer = registered_counts(adata, setup_args)
    with located(location(adata, setup_args, "rna_layer")):
        check_counts(counts, layer)
        check_looks_like_counts(counts, layer, gene_likelihood)
    with located(location(adata, setup_args, "condition_key")):
        conditions = registry["field_registries"]["condition"]["state_registry"]
        check_known_conditions(
            registered_obs(adata, setup_args, "condition_key"),
            setup_args["condition_key"],
            [str(c) for c in conditions["categorical_mapping"]],
        )
    covariate_args = {
        "batch_key": (setup_args.get("batch_key"), None, None, None),
        "size_factor_key": (None, setup_args.get("size_factor_key"), None, None),
        "categorical_covariate_keys": (
            None,
            None,
            setup_args.get("categorical_covariate_keys"),
            None,
        ),
        "continuous_covariate_keys": (
            None,
            None,
            None,
            setup_args.get("continuous_covariate_keys"),
        ),
    }
    known = registered_categories(registry)
    for argument, check_args in covariate_args.items():
        holder = registered_obs(adata, setup_args, argument)
        with located(location(adata, setup_args, argument)):
            check_covariates(holder, *check_args)
            if argument in known:
                check_known_categories(holder, argument, known[argument])


@contextmanager
def _restored_on_error(adata) -> Iterator[None]:
    """Remove what a failed call added to ``adata``'s obs, obsm and uns (and its modalities').

    A query registers a new AnnData with scvi-tools (``_scvi_*`` columns, ``_scvi_uuid``)
    before it can count its cells; when the call then fails, the AnnData goes back to the
    keys it had. Only keys are compared, so this costs nothing on success.
    """
    if not isinstance(adata, AnnData | MuData):
        yield
        return
    holders = [adata, *(adata.mod.values() if isinstance(adata, MuData) else [])]
    before = [(set(h.obs.columns), set(h.obsm.keys()), set(h.uns.keys())) for h in holders]
    try:
        yield
    except Exception:
        for holder, (obs, obsm, uns) in zip(holders, before, strict=True):
            added = [column for column in holder.obs.columns if column not in obs]
            if added:
                holder.obs.drop(columns=added, inplace=True)
            for key in [key for key in holder.obsm.keys() if key not in obsm]:
                del holder.obsm[key]
            for key in [key for key in holder.uns.keys() if key not in uns]:
                del holder.uns[key]
        raise


def leaves_adata_untouched_on_error(method: Callable) -> Callable:
    """Decorate a query so that, when it fails, its ``adata`` keeps the keys it had."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        adata = kwargs["adata"] if "adata" in kwargs else (args[0] if args else None)
        with _restored_on_error(adata):
            return method(self, *args, **kwargs)

    return wrapper


def check_registered_labels(
    adata: AnnData | MuData, setup_args: Mapping, conditions: Sequence[str], codes
) -> None:
    """Refuse a condition column relabelled after registration.

    The model reads the registered codes (``_scvi_condition``), so after a relabelling the
    scores, DE groups and controls would follow the old labels while ``obs`` shows new ones.
    """
    key = setup_args["condition_key"]
    with located(location(adata, setup_args, "condition_key")):
        obs = registered_obs(adata, setup_args, "condition_key").obs
        if key not in obs:
            raise KeyError(
                f"condition_key={key!r} is no longer a column of adata.obs, which the model "
                "was registered with; restore it."
            )
        live = obs[key].astype(str).to_numpy()
        registered = np.asarray(conditions, dtype=object)[np.asarray(codes).ravel()]
        changed = np.flatnonzero(live != registered.astype(str))
        if changed.size:
            first = changed[0]
            raise ValueError(
                f"adata.obs[{key!r}] changed after the AnnData was registered: {changed.size} "
                f"cells have another label now (e.g. cell {obs.index[first]!r}: registered "
                f"{registered[first]!r}, now {live[first]!r}). The model reads the registered "
                "labels, so results would not match the column. Restore the labels, or pass "
                "adata.copy(), which the model registers afresh with its current labels (to "
                "train on new labels, set up and train a new model)."
            )


# --------------------------------------------------------------------------- MuData
# ComparativeVI.setup_mudata reuses the AnnData checks above on the modality (or the MuData)
# that holds each field; the helpers below find that object and rename ``adata`` in messages.


def modality_names(mdata: MuData, modalities: Mapping[str, str | None] | None) -> dict:
    """Check the ``modalities`` of ``setup_mudata``: ``rna_layer`` given, every name known."""
    modalities = dict(modalities or {})
    if modalities.get("rna_layer") is None:
        raise ValueError(
            "modalities must name the modality holding the RNA counts, e.g. "
            f"modalities={{'rna_layer': 'rna'}} (modalities of mdata: {list(mdata.mod)})."
        )
    for argument, modality in modalities.items():
        if modality is not None and modality not in mdata.mod:
            raise ValueError(
                f"modalities[{argument!r}]={modality!r} is not a modality of mdata "
                f"(modalities: {list(mdata.mod)})."
            )
        if modality is not None and not mdata.mod[modality].obs_names.equals(mdata.obs_names):
            # The data loader indexes every field by the MuData's cells, so a modality that
            # lacks cells, or orders them differently, would pair counts with wrong labels.
            raise ValueError(
                f"mdata.mod[{modality!r}] ({argument}) must hold every cell of mdata in the "
                f"same order ({mdata.mod[modality].n_obs} vs {mdata.n_obs} cells); subset "
                "mdata to the cells that every modality has first."
            )
    return modalities


def registered_counts(adata: AnnData | MuData, setup_args: Mapping) -> tuple[AnnData, str | None]:
    """Return the AnnData (a MuData's RNA modality) and layer holding the counts."""
    if isinstance(adata, MuData):
        return adata.mod[setup_args["modalities"]["rna_layer"]], setup_args["rna_layer"]
    return adata, setup_args["layer"]


def registered_obs(adata: AnnData | MuData, setup_args: Mapping, argument: str):
    """Return the object whose ``.obs`` holds a setup argument's column.

    As in scvi-tools' MuData fields: the modality named in ``modalities`` for that argument,
    else the MuData itself.
    """
    if isinstance(adata, MuData):
        modality = (setup_args.get("modalities") or {}).get(argument)
        return adata if modality is None else adata.mod[modality]
    return adata


def location(adata: AnnData | MuData, setup_args: Mapping, argument: str) -> str:
    """How messages name the object holding a setup argument's field (``adata`` for AnnData)."""
    if not isinstance(adata, MuData):
        return "adata"
    modality = (setup_args.get("modalities") or {}).get(argument)
    return "mdata" if modality is None else f"mdata.mod[{modality!r}]"


@contextmanager
def located(name: str) -> Iterator[None]:
    """Re-raise the AnnData checks' errors naming ``name`` (a MuData location) for ``adata``.

    The counts' ``layer`` argument is ``rna_layer`` in ``setup_mudata``, so messages say so.
    """
    try:
        yield
    except (KeyError, ValueError) as error:
        if name == "adata" or not error.args or not isinstance(error.args[0], str):
            raise
        message = error.args[0].replace("setup_anndata(adata,", "setup_mudata(mdata,")
        # ``model.adata`` is the MuData itself: point it at the same modality instead.
        message = re.sub(r"(?<!\.)\badata\b", name, message)
        message = message.replace("model.adata.", f"model.adata{name.removeprefix('mdata')}.")
        message = re.sub(r"\blayer=", "rna_layer=", message)
        raise type(error)(message) from None


def check_same_modality_genes(mdata: AnnData | MuData, model_var_names: Mapping) -> None:
    """Require every modality a MuData model was saved with, with the same features in order."""
    if not isinstance(mdata, MuData):
        raise ValueError(
            f"The model was trained on a MuData (modalities {list(model_var_names)}); "
            "load it with a MuData that has those modalities, not an AnnData."
        )
    for modality, var_names in model_var_names.items():
        if modality not in mdata.mod:
            raise ValueError(
                f"mdata has no modality {modality!r}, which the model was trained with "
                f"(modalities of mdata: {list(mdata.mod)})."
            )
        with located(f"mdata.mod[{modality!r}]"):
            check_same_genes(mdata.mod[modality], var_names)


def check_data_kind(adata: AnnData | MuData, setup_args: Mapping) -> None:
    """Refuse an AnnData for a model set up with ``setup_mudata``, and a MuData for the reverse."""
    trained_on_mudata = "modalities" in setup_args
    if isinstance(adata, MuData) == trained_on_mudata:
        return
    if trained_on_mudata:
        raise ValueError(
            "The model was set up with setup_mudata; pass a MuData with the same modalities "
            f"({setup_args['modalities']}), not an AnnData."
        )
    raise ValueError(
        "The model was set up with setup_anndata; pass an AnnData (e.g. the RNA modality, "
        "mdata.mod['rna']), not a MuData."
    )
