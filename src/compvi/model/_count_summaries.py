"""Per-gene summaries of raw counts, read a block of rows at a time (backed data too)."""

from __future__ import annotations

import numpy as np
from scvi.data import AnnDataManager

from .._constants import REGISTRY_KEYS
from ..dataloaders._row_blocks import row_blocks, row_totals, scale_rows

_EPS = 1e-8


def count_cells(rows) -> int:
    """Count the distinct cells that ``rows`` (indices or a mask) select."""
    rows = np.asarray(rows)
    return int(rows.sum()) if rows.dtype == bool else len(np.unique(rows))


def mean_counts(counts, rows) -> np.ndarray:
    """Mean raw count of each gene over ``rows`` (indices or a mask), a block at a time."""
    total = sum(np.asarray(block.sum(0)).ravel() for block in row_blocks(counts, rows))
    return total / count_cells(rows)


class StreamedCounts:
    """Counts that scvi-tools' DE selects cells of and averages, read a block at a time."""

    def __init__(self, counts, rows=None) -> None:
        self.counts, self.rows = counts, rows

    def __getitem__(self, rows) -> StreamedCounts:
        return StreamedCounts(self.counts, rows)

    def mean(self, axis=None, dtype=None, out=None) -> np.ndarray:
        """Mean count of each gene over the selected cells (``np.mean(selection, 0)``)."""
        if axis != 0 or out is not None or self.rows is None:
            raise NotImplementedError("Only the mean of selected cells over axis 0 streams.")
        return mean_counts(self.counts, self.rows)


class StreamingCountsManager:
    """An AnnDataManager whose count matrix scvi-tools' DE reads a block at a time.

    ``get_bayes_factors`` estimates its pseudocounts from ``np.mean(x[cells], 0)`` of the
    registered counts, which would load every cell of both groups at once (from disk, for a
    backed AnnData); it gets counts whose selections stream instead.
    """

    def __init__(self, manager: AnnDataManager) -> None:
        self._manager = manager

    def __getattr__(self, name: str):
        return getattr(self._manager, name)

    def get_from_registry(self, key: str):
        """Return the registry's data, with the counts wrapped to stream."""
        data = self._manager.get_from_registry(key)
        return StreamedCounts(data) if key == REGISTRY_KEYS.X_KEY else data


def raw_summary(counts, rows) -> dict[str, np.ndarray]:
    """Per-gene raw-count summaries of one group of cells, read a block of rows at a time."""
    total, nonzero, normalized = 0.0, 0.0, 0.0
    for block in row_blocks(counts, rows):
        total = total + np.asarray(block.sum(0)).ravel()
        nonzero = nonzero + np.asarray((block != 0).sum(0)).ravel()
        per_10k = scale_rows(block, 1e4 / np.maximum(row_totals(block), _EPS))
        normalized = normalized + np.asarray(per_10k.sum(0)).ravel()
    n_cells = count_cells(rows)
    return {
        "raw_mean": total / n_cells,
        "non_zeros_proportion": nonzero / n_cells,
        "raw_normalized_mean": normalized / n_cells,
    }


def paired_summaries(first: dict, second: dict) -> dict[str, np.ndarray]:
    """Name two groups' summaries as scvi-tools does: ``raw_mean1``, ``raw_mean2``, ..."""
    return {
        f"{name}{suffix}": values
        for suffix, summary in (("1", first), ("2", second))
        for name, values in summary.items()
    }
