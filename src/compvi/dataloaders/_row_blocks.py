"""Reading a count matrix a block of rows at a time, whether in memory or backed on disk.

Dense arrays, scipy sparse matrices and the h5py/sparse datasets of an AnnData opened with
``backed="r"`` all index by rows, so code written against these helpers never reads a backed
matrix whole: memory stays bounded by one block, whatever the number of cells.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy import sparse

# Rows per block: 10,000 cells x 2,000 genes is 80 MB dense in float32, at most.
BLOCK_ROWS = 10_000


def row_blocks(
    matrix, rows: Sequence[int] | None = None, block_rows: int | None = None
) -> Iterator[np.ndarray | sparse.csr_matrix]:
    """Yield the matrix's rows (all, or ``rows``: indices or a mask) in blocks, in memory.

    Distinct ``rows`` are read in increasing order (h5py needs sorted indices, and sorted reads are
    the fast ones on disk); the order of the blocks' rows is then not that of ``rows``.
    ``block_rows`` defaults to :data:`BLOCK_ROWS`.
    """
    block_rows = block_rows or BLOCK_ROWS
    if rows is None:
        for start in range(0, matrix.shape[0], block_rows):
            yield _in_memory(matrix[start : start + block_rows])
        return
    rows = np.asarray(rows)
    rows = np.flatnonzero(rows) if rows.dtype == bool else np.unique(rows.astype(np.int64))
    for start in range(0, len(rows), block_rows):
        yield _in_memory(matrix[rows[start : start + block_rows]])


def _in_memory(block) -> np.ndarray | sparse.csr_matrix:
    return sparse.csr_matrix(block) if sparse.issparse(block) else np.asarray(block)


def stored_values(block: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Return the values a block stores: all of a dense one, the non-zeros of a sparse one."""
    return block.data if sparse.issparse(block) else block


def row_totals(block: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Total counts of each row of a block."""
    return np.asarray(block.sum(axis=1), dtype=np.float64).ravel()


def scale_rows(block: np.ndarray | sparse.spmatrix, factors: np.ndarray):
    """Multiply each row of a block by its factor, keeping a sparse block sparse."""
    if sparse.issparse(block):
        return sparse.diags(factors) @ block
    return block * factors[:, None]
