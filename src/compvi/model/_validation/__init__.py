"""Checks on user input that fail early with a message naming the field and the fix."""

from __future__ import annotations

from ._arguments import check_indices, check_integer, check_number, check_train_arguments
from ._counts import check_counts, check_looks_like_counts, get_matrix, matrix_name
from ._genes import check_same_genes, check_same_modality_genes, check_unique_var_names
from ._mudata import (
    check_data_kind,
    located,
    location,
    modality_names,
    registered_counts,
    registered_obs,
)
from ._obs import (
    check_condition,
    check_covariates,
    check_distinct_keys,
    check_known_conditions,
    check_obs_key,
    check_unique_obs_names,
    normalize_control_category,
    warn_covariates_that_split_groups,
    warn_near_duplicate_controls,
)
from ._query import (
    check_known_categories,
    check_query,
    check_registered_labels,
    check_saved_model_class,
    leaves_adata_untouched_on_error,
    registered_categories,
)

__all__ = [
    "check_condition",
    "check_counts",
    "check_covariates",
    "check_data_kind",
    "check_distinct_keys",
    "check_indices",
    "check_integer",
    "check_known_categories",
    "check_known_conditions",
    "check_looks_like_counts",
    "check_number",
    "check_obs_key",
    "check_query",
    "check_registered_labels",
    "check_same_genes",
    "check_same_modality_genes",
    "check_saved_model_class",
    "check_train_arguments",
    "check_unique_obs_names",
    "check_unique_var_names",
    "get_matrix",
    "leaves_adata_untouched_on_error",
    "located",
    "location",
    "matrix_name",
    "modality_names",
    "normalize_control_category",
    "registered_categories",
    "registered_counts",
    "registered_obs",
    "warn_covariates_that_split_groups",
    "warn_near_duplicate_controls",
]
