"""Minibatches that pair control cells with perturbed cells."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from scvi import settings
from scvi.data import AnnDataManager
from torch.utils.data import DataLoader, Dataset

from .._constants import DATA_SOURCES


class ShardedBatchSampler:
    """Minibatches of one group of cells, planned globally and sharded across processes.

    Every pass orders the group (a fresh permutation per pass when shuffling, seeded by
    ``seed``, the group and the pass number, so every process draws the same one) and cuts it
    into *global* minibatches of ``batch_size * world_size`` cells; process ``rank`` takes
    every ``world_size``-th cell of each, sorted (sorted rows read faster from a backed
    AnnData and the order within a minibatch does not matter). Within a pass the processes'
    shards are disjoint and together cover the group once, and a run on one process with
    ``batch_size * world_size`` cells per minibatch sees the same global minibatches. A last
    global minibatch with fewer cells than processes joins the one before, so no process
    ever gets an empty shard.

    Parameters
    ----------
    indices
        Row indices of the group's cells.
    batch_size
        Cells per minibatch on each process.
    shuffle
        Draw a new order at every pass instead of keeping ``indices``' order.
    drop_last
        Drop the last global minibatch when it is incomplete.
    seed
        Seed of the permutations.
    group
        Number of the group, so that groups of the same size get different permutations.
    rank, world_size
        This process's rank and the number of processes.

    """

    def __init__(
        self,
        indices: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool = False,
        seed: int = 0,
        group: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}.")
        self.indices = np.asarray(indices)
        self.global_batch_size = batch_size * world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.group = seed, group
        self.rank, self.world_size = rank, world_size
        self.passes = 0
        if len(self.indices) < world_size:
            raise ValueError(
                f"Cannot shard {len(self.indices)} cells over {world_size} processes; each "
                "process needs at least one cell of each group. Use fewer devices."
            )
        if drop_last and len(self.indices) < self.global_batch_size:
            raise ValueError(
                f"drop_last=True drops all {len(self.indices)} cells: a global minibatch holds "
                f"{self.global_batch_size}. Lower batch_size or set drop_last=False."
            )

    def global_batches(self, order: np.ndarray) -> list[np.ndarray]:
        """Cut an ordering of the group into the global minibatches of one pass."""
        starts = range(0, len(order), self.global_batch_size)
        batches = [order[start : start + self.global_batch_size] for start in starts]
        if len(batches[-1]) < self.global_batch_size and self.drop_last:
            batches.pop()
        elif len(batches) > 1 and len(batches[-1]) < self.world_size:
            batches[-2:] = [np.concatenate(batches[-2:])]
        return batches

    def __len__(self) -> int:
        return len(self.global_batches(self.indices))

    def next_pass(self) -> list[np.ndarray]:
        """Draw the next pass: this process's (sorted) shard of each global minibatch."""
        order = self.indices
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.group, self.passes])
            order = rng.permutation(order)
        self.passes += 1
        return [
            np.sort(batch[self.rank :: self.world_size]) for batch in self.global_batches(order)
        ]

    def __iter__(self) -> Iterator[np.ndarray]:
        # A generator: the pass is drawn at the first minibatch asked for, not at iter().
        yield from self.next_pass()


def paired_samplers(
    groups: dict[str, Sequence[int]],
    batch_size: int,
    *,
    shuffle: bool,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, ShardedBatchSampler]:
    """One seeded sampler per group of a paired loader; each group non-empty.

    Seeded by ``scvi.settings.seed`` and the group's position, as every paired loader is,
    so that the host loader and the device-resident one draw the same minibatches.
    """
    for name, indices in groups.items():
        if len(indices) == 0:
            raise ValueError(f"PairedDataLoader needs at least one {name} cell.")
    return {
        name: ShardedBatchSampler(
            indices,
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=settings.seed or 0,
            group=group,
            rank=rank,
            world_size=world_size,
        )
        for group, (name, indices) in enumerate(groups.items())
    }


class PairedDataLoader:
    """Iterate over minibatches that each hold a control part and a perturbed part.

    An epoch walks once through the larger group; the smaller group starts over, freshly
    shuffled, whenever it runs out, so every step sees both groups. Each item is a dict with
    keys ``"control"`` and ``"perturbed"``, each a dict of registry tensors. Under
    distributed training each process loads its shard of every global minibatch (see
    :class:`ShardedBatchSampler`), and all processes take the same number of steps.

    Parameters
    ----------
    adata_manager
        Manager of the registered AnnData.
    control_indices, perturbed_indices
        Row indices of control and perturbed cells; both must be non-empty.
    batch_size
        Cells per group in each minibatch (on each process).
    shuffle
        Reshuffle each group at every pass.
    drop_last
        Drop each group's last incomplete minibatch.
    load_sparse_tensor
        Load sparse count matrices as sparse tensors (densified on the module's device).
    rank, world_size
        This process's rank and the number of processes of distributed training.
    **loader_kwargs
        Passed to :class:`torch.utils.data.DataLoader` (``num_workers``, ``pin_memory``, ...).

    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        control_indices: Sequence[int],
        perturbed_indices: Sequence[int],
        *,
        batch_size: int = 128,
        shuffle: bool = False,
        drop_last: bool = False,
        load_sparse_tensor: bool = False,
        rank: int = 0,
        world_size: int = 1,
        **loader_kwargs,
    ) -> None:
        self.samplers = paired_samplers(
            {DATA_SOURCES.CONTROL: control_indices, DATA_SOURCES.PERTURBED: perturbed_indices},
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )
        # One dataset over the whole AnnData: the samplers hand it row indices, and a backed
        # AnnData is read a minibatch at a time.
        dataset = adata_manager.create_torch_dataset(load_sparse_tensor=load_sparse_tensor)
        loader_kwargs.setdefault("num_workers", settings.dl_num_workers)
        # batch_size=None: each sampler item is a whole minibatch, read with one indexing call.
        self.loaders = {
            name: DataLoader(dataset, sampler=sampler, batch_size=None, **loader_kwargs)
            for name, sampler in self.samplers.items()
        }

    def __len__(self) -> int:
        return max(len(sampler) for sampler in self.samplers.values())

    def __iter__(self) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
        iterators = {name: iter(loader) for name, loader in self.loaders.items()}
        for _ in range(len(self)):
            batch = {}
            for name, loader in self.loaders.items():
                try:
                    batch[name] = next(iterators[name])
                except StopIteration:
                    # A new pass over the smaller group: a new permutation, the same on every
                    # process.
                    iterators[name] = iter(loader)
                    batch[name] = next(iterators[name])
            yield batch


class _RowsInOrder(Dataset):
    """Rows of a registered AnnData in the order asked for, read in increasing order.

    A backed AnnData can only be read at increasing, distinct rows (scvi-tools' dataset
    sorts them, which would silently reorder a minibatch), so each minibatch reads its
    distinct rows sorted and puts them back in the requested order.
    """

    def __init__(self, adata_manager: AnnDataManager) -> None:
        self.dataset = adata_manager.create_torch_dataset()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        distinct, position = np.unique(rows, return_inverse=True)
        contiguous = distinct[-1] - distinct[0] + 1 == len(distinct)
        # A range reads as one slice, which on disk is one read instead of one per row.
        tensors = self.dataset[slice(distinct[0], distinct[-1] + 1) if contiguous else distinct]
        return {key: torch.as_tensor(value)[position] for key, value in tensors.items()}


class InOrderDataLoader(DataLoader):
    """Minibatches of the chosen cells, in the order given, for inference.

    Parameters
    ----------
    adata_manager
        Manager of the registered AnnData (in memory or backed).
    indices
        Row indices (or a boolean mask) of the cells; ``None`` uses all, in order.
    batch_size
        Cells per minibatch.
    **loader_kwargs
        Passed to :class:`torch.utils.data.DataLoader`.

    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int = 128,
        **loader_kwargs,
    ) -> None:
        n_obs = adata_manager.adata.shape[0]
        indices = np.arange(n_obs) if indices is None else np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
        loader_kwargs.setdefault("num_workers", settings.dl_num_workers)
        super().__init__(
            _RowsInOrder(adata_manager), sampler=batches, batch_size=None, **loader_kwargs
        )
        self.indices = indices


def concatenate_sources(batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack the control and perturbed parts of a paired minibatch into one minibatch."""
    control, perturbed = batch[DATA_SOURCES.CONTROL], batch[DATA_SOURCES.PERTURBED]
    return {key: _stack_rows(control[key], perturbed[key]) for key in control}


def _stack_rows(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    if first.layout == torch.strided:
        return torch.cat([first, second], dim=0)
    # Sparse counts (load_sparse_tensor=True) stay sparse until the module densifies them on
    # its device; torch concatenates sparse tensors in the COO layout only.
    return torch.cat([first.to_sparse_coo(), second.to_sparse_coo()], dim=0).to_sparse_csr()
