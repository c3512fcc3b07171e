"""Registered data held on the training device, with minibatches gathered there by index.

On a GPU the host-side loader sets the pace: every step indexes AnnData rows, densifies
them and copies them. When the registered data fit on the device, :class:`DeviceData` holds
them there once (sparse counts as CSR: row pointers, column indices and values; dense
counts as a dense tensor) and every minibatch is gathered and densified on the device, by
row index. The loaders here draw their rows from the same
:class:`~compvi.dataloaders._paired.ShardedBatchSampler` as the host loaders, so a seeded
run sees the same minibatches on either path. The gather is plain torch, the same on any
device, and CI tests it on CPU tensors; on a CPU the default path densifies sparse rows
with scipy instead, which is faster there (see :class:`DeviceData`'s ``sparse_gather``).

The row counts of each minibatch's sparse rows are known on the host (a copy of the row
pointers stays there), so gathering needs no device-to-host synchronisation; the row order
of a whole pass is copied to the device once per pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scvi.data import AnnDataManager
from scvi.data._utils import registry_key_to_default_dtype

from .._constants import REGISTRY_KEYS

logger = logging.getLogger(__name__)

#: Values of the ``data_path`` option of the data splitter and of inference.
DATA_PATHS = ("auto", "device", "loader")
#: Share of a GPU's free memory the held data may take under ``data_path="auto"``; the rest
#: is left to the model, its activations and the optimizer.
GPU_MEMORY_FRACTION = 0.5
#: Largest held data on a CPU under ``data_path="auto"`` (tensors share the memory of
#: float32 values and int32/int64 indices with the AnnData; other dtypes are copied).
CPU_BYTES_CAP = 8 * 2**30
#: Largest array copied to a GPU through pinned memory, without waiting (a pass's rows).
PINNED_COPY_BYTES = 64 * 2**20
#: Options of the paired loaders that the device path honours; any other loader option
#: (``num_workers``, ``pin_memory``, ...) belongs to :class:`torch.utils.data.DataLoader`.
DEVICE_LOADER_OPTIONS = frozenset({"batch_size", "drop_last"})


@dataclass(frozen=True)
class DataPath:
    """Which path reads the minibatches, and why.

    Attributes
    ----------
    path
        ``"device"`` (held on ``device``, gathered there) or ``"loader"`` (the host loader).
    reason
        Why, in words, for the log line.
    device
        The device the data are (or would be) held on.

    """

    path: str
    reason: str
    device: torch.device

    @property
    def on_device(self) -> bool:
        """Whether minibatches are gathered from device-resident data."""
        return self.path == "device"

    def describe(self) -> str:
        """Return the log line: the path and the reason."""
        if self.on_device:
            return (
                f"compvi data path: device: minibatches are gathered on {self.device} from "
                f"data held there ({self.reason})."
            )
        return f"compvi data path: loader: minibatches are read on the host ({self.reason})."


def _format_bytes(n_bytes: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} B"


def _why_not_resident(adata_manager: AnnDataManager, loader_options: Sequence[str]) -> str | None:
    """Say why the registered data cannot be held as tensors, or ``None`` when they can."""
    if getattr(adata_manager.adata, "isbacked", False):
        return "the AnnData is backed: its counts stay on disk"
    for key in adata_manager.data_registry:
        data = adata_manager.get_from_registry(key)
        if key == REGISTRY_KEYS.X_KEY:
            supported = isinstance(data, np.ndarray) or sparse.issparse(data)
        else:
            supported = isinstance(data, np.ndarray | pd.DataFrame)
        if not supported:
            return f"the registered {key!r} is a {type(data).__name__}, not an in-memory array"
    other = sorted(set(loader_options) - DEVICE_LOADER_OPTIONS)
    if other:
        return f"DataLoader options were given ({', '.join(other)})"
    return None


def resident_nbytes(adata_manager: AnnDataManager, rows: np.ndarray | None = None) -> int:
    """Bytes the registered data (all rows, or the distinct ``rows``) take as device tensors."""
    n_rows = adata_manager.adata.shape[0] if rows is None else len(rows)
    total = 0
    for key in adata_manager.data_registry:
        data = adata_manager.get_from_registry(key)
        if key == REGISTRY_KEYS.X_KEY and sparse.issparse(data):
            nnz = data.nnz if rows is None else int(data.getnnz(axis=1)[rows].sum())
            # float32 values, column indices as stored, int64 row pointers
            index_bytes = data.indices.dtype.itemsize if hasattr(data, "indices") else 8
            total += nnz * (4 + index_bytes) + (n_rows + 1) * 8
        else:
            n_columns = int(np.prod(data.shape[1:]))
            total += n_rows * n_columns * np.dtype(registry_key_to_default_dtype(key)).itemsize
    return total


def _memory_budget(device: torch.device) -> tuple[int | None, str]:
    """Largest held data under ``data_path="auto"`` on ``device``, and its description."""
    if device.type == "cpu":
        return CPU_BYTES_CAP, f"the {_format_bytes(CPU_BYTES_CAP)} cap on CPU"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(GPU_MEMORY_FRACTION * free)
        share = f"{GPU_MEMORY_FRACTION:.0%}"
        return budget, f"{share} of the {_format_bytes(free)} free on {device}"
    return None, f"compvi cannot read the free memory of {device.type} devices"


def choose_data_path(
    adata_manager: AnnDataManager,
    device: torch.device | str,
    requested: str = "auto",
    *,
    rows: np.ndarray | None = None,
    loader_options: Sequence[str] = (),
) -> DataPath:
    """Choose between device-resident data and the host loader.

    ``"auto"`` holds the data on the device when they are in memory (not backed, in arrays
    or scipy sparse matrices), no :class:`~torch.utils.data.DataLoader` option was given and
    their size is below :data:`GPU_MEMORY_FRACTION` of the GPU's free memory (on CPU: below
    :data:`CPU_BYTES_CAP`). ``"device"`` holds them whenever they are in memory, and raises
    otherwise; ``"loader"`` always uses the host loader.

    Parameters
    ----------
    adata_manager
        Manager of the registered AnnData.
    device
        The device the minibatches are used on.
    requested
        ``"auto"``, ``"device"`` or ``"loader"``.
    rows
        Distinct rows that would be held (all when ``None``).
    loader_options
        Names of the loader options given, besides the sampler's.

    Raises
    ------
    ValueError
        An unknown ``requested``, or ``"device"`` for data that cannot be held.

    """
    device = torch.device(device)
    if requested not in DATA_PATHS:
        raise ValueError(f"data_path={requested!r} is not one of {DATA_PATHS}.")
    if requested == "loader":
        return DataPath("loader", "data_path='loader' was asked for", device)
    problem = _why_not_resident(adata_manager, loader_options)
    if problem is not None:
        if requested == "device":
            raise ValueError(
                f"data_path='device' holds the registered data as tensors, but {problem}. "
                "Use data_path='auto' or 'loader'."
            )
        return DataPath("loader", problem, device)
    n_bytes = resident_nbytes(adata_manager, rows)
    size = _format_bytes(n_bytes)
    if requested == "device":
        return DataPath("device", f"data_path='device' was asked for; {size}", device)
    budget, budget_text = _memory_budget(device)
    if budget is None:
        return DataPath("loader", budget_text, device)
    if n_bytes > budget:
        return DataPath("loader", f"the registered data ({size}) exceed {budget_text}", device)
    return DataPath(
        "device", f"the registered data ({size}) are in memory, below {budget_text}", device
    )


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """One array as a tensor on ``device``; on CPU it shares the array's memory."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda" and tensor.nbytes <= PINNED_COPY_BYTES:
        # Pinned, so that the copy (of a pass's row order, say) does not wait for the
        # kernels queued before it.
        return tensor.pin_memory().to(device, non_blocking=True)
    # The data themselves are copied once, before training: no pinned double of them.
    return tensor.to(device)


class DeviceData:
    """The registered fields of an AnnData as tensors on one device, gathered by row.

    Each field has the dtype the host loader gives it (float32 counts and continuous
    fields, int64 categorical codes), so a gathered minibatch equals the host loader's.
    Sparse counts are held in CSR with duplicate entries summed (as ``toarray`` sums them)
    and densified a minibatch at a time; dense counts are held dense.

    Parameters
    ----------
    adata_manager
        Manager of the registered, in-memory AnnData.
    device
        Where to hold the tensors.
    rows
        Distinct rows of the AnnData to hold, in the order they are then numbered; ``None``
        holds all, numbered as in the AnnData.
    sparse_gather
        How sparse rows are gathered and densified: ``"torch"``, a few vectorised tensor
        operations (on an accelerator, where they take microseconds); ``"scipy"``, scipy's
        row indexing and ``toarray`` on the host (a CPU, where its compiled loop is several
        times faster than a chain of tensor operations); ``None`` chooses ``"scipy"`` on
        CPU and ``"torch"`` elsewhere. Both give the same tensors.

    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        device: torch.device | str,
        rows: np.ndarray | None = None,
        *,
        sparse_gather: Literal["torch", "scipy"] | None = None,
    ) -> None:
        self.device = torch.device(device)
        if sparse_gather is None:
            sparse_gather = "scipy" if self.device.type == "cpu" else "torch"
        if sparse_gather not in ("torch", "scipy"):
            raise ValueError(f"sparse_gather={sparse_gather!r} is not 'torch' or 'scipy'.")
        if sparse_gather == "scipy" and self.device.type != "cpu":
            raise ValueError(f"sparse_gather='scipy' gathers on the host, not on {self.device}.")
        self.sparse_gather = sparse_gather
        self.keys = list(adata_manager.data_registry)
        self.fields: dict[str, torch.Tensor] = {}
        self.n_rows = adata_manager.adata.shape[0] if rows is None else len(rows)
        for key in self.keys:
            data = adata_manager.get_from_registry(key)
            dtype = registry_key_to_default_dtype(key)
            if key == REGISTRY_KEYS.X_KEY:
                self._hold_counts(data, dtype, rows)
                continue
            values = data.to_numpy() if isinstance(data, pd.DataFrame) else np.asarray(data)
            if rows is not None:
                values = values[rows]
            self.fields[key] = to_device(values.astype(dtype, copy=False), self.device)

    def _hold_counts(self, counts, dtype: type, rows: np.ndarray | None) -> None:
        self.dense = self.host_counts = None
        if not sparse.issparse(counts):
            dense = np.asarray(counts) if rows is None else np.asarray(counts)[rows]
            self.dense = to_device(dense.astype(dtype, copy=False), self.device)
            self.n_genes = dense.shape[1]
            return
        csr = sparse.csr_matrix(counts) if counts.format != "csr" else counts
        if rows is not None:
            csr = csr[rows]
        if not csr.has_canonical_format:
            csr = csr.copy()
            csr.sum_duplicates()
        if csr.dtype != dtype:
            csr = csr.astype(dtype)
        self.n_genes = csr.shape[1]
        # The host keeps the row pointers: the size of each minibatch's non-zeros is then
        # known without asking the device.
        self.host_row_pointers = csr.indptr.astype(np.int64, copy=False)
        if self.sparse_gather == "scipy":
            self.host_counts = csr
            return
        self.row_pointers = to_device(self.host_row_pointers, self.device)
        self.columns = to_device(csr.indices, self.device)
        self.values = to_device(csr.data, self.device)

    def release(self) -> None:
        """Drop the held tensors (loaders that still refer to this object then fail)."""
        self.fields = {}
        self.dense = self.host_counts = self.row_pointers = self.columns = self.values = None

    def nonzeros(self, rows: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        """Count the stored entries of each minibatch ``rows[bounds[i]:bounds[i + 1]]``."""
        if self.dense is not None:
            return np.zeros(len(bounds) - 1, dtype=np.int64)
        pointers = self.host_row_pointers
        per_row = np.concatenate([[0], np.cumsum(pointers[rows + 1] - pointers[rows])])
        return per_row[bounds[1:]] - per_row[bounds[:-1]]

    def gather(self, rows: torch.Tensor, nonzeros: int) -> dict[str, torch.Tensor]:
        """Registry tensors of the held rows ``rows`` (on this device), in their order.

        ``nonzeros`` is the number of stored count entries in those rows (from
        :meth:`nonzeros`); it sizes the gather without a device-to-host synchronisation.
        """
        return {
            key: self._counts(rows, nonzeros)
            if key == REGISTRY_KEYS.X_KEY
            else self.fields[key].index_select(0, rows)
            for key in self.keys
        }

    def _counts(self, rows: torch.Tensor, nonzeros: int) -> torch.Tensor:
        if self.dense is not None:
            return self.dense.index_select(0, rows)
        if self.host_counts is not None:
            # On CPU the rows' tensor shares its memory with a numpy array: no copy.
            return torch.from_numpy(self.host_counts[rows.numpy()].toarray())
        n_cells = rows.shape[0]
        # index_select and index_copy_ throughout: none of them waits for the device.
        starts = self.row_pointers.index_select(0, rows)
        lengths = self.row_pointers.index_select(0, rows + 1) - starts
        # Entry k of the output (cells in order, each cell's entries in order) is entry
        # k + shift of the held arrays, where shift is its cell's start minus the cell's
        # first output position.
        shift = starts - (torch.cumsum(lengths, 0) - lengths)
        entries = torch.arange(nonzeros, device=self.device) + torch.repeat_interleave(
            shift, lengths, output_size=nonzeros
        )
        offsets = torch.arange(0, n_cells * self.n_genes, self.n_genes, device=self.device)
        flat = torch.repeat_interleave(offsets, lengths, output_size=nonzeros)
        flat += self.columns.index_select(0, entries)
        dense = torch.zeros(n_cells * self.n_genes, dtype=self.values.dtype, device=self.device)
        # Canonical CSR: each (cell, gene) is written once, so no accumulation is needed.
        dense.index_copy_(0, flat, self.values.index_select(0, entries))
        return dense.view(n_cells, self.n_genes)
