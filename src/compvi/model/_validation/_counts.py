"""Checks on the count matrix: finite, non-negative, integer, not log-normalized."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse

from ...dataloaders._row_blocks import row_blocks, row_totals, stored_values

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
