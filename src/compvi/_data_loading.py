"""Minibatches that pair control cells with perturbed cells."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from scvi.data import AnnDataManager
from scvi.dataloaders import AnnDataLoader

from ._constants import DATA_SOURCES


class PairedDataLoader:
    """Iterate over minibatches that each hold a control part and a perturbed part.

    An epoch walks once through the larger group; the smaller group starts over, freshly
    shuffled, whenever it runs out, so every step sees both groups. Each item is a dict with
    keys ``"control"`` and ``"perturbed"``, each a dict of registry tensors.

    Parameters
    ----------
    adata_manager
        Manager of the registered AnnData.
    control_indices, perturbed_indices
        Row indices of control and perturbed cells; both must be non-empty.
    batch_size
        Cells per group in each minibatch.
    shuffle
        Reshuffle each group at every pass.
    drop_last
        Drop each group's last incomplete minibatch.
    load_sparse_tensor
        Load sparse count matrices as sparse tensors (densified on the module's device).
    **loader_kwargs
        Passed to :class:`scvi.dataloaders.AnnDataLoader`.

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
        **loader_kwargs,
    ) -> None:
        groups = {
            DATA_SOURCES.CONTROL: control_indices,
            DATA_SOURCES.PERTURBED: perturbed_indices,
        }
        for name, indices in groups.items():
            if len(indices) == 0:
                raise ValueError(f"PairedDataLoader needs at least one {name} cell.")
        self.loaders = {
            name: AnnDataLoader(
                adata_manager,
                indices=indices,
                batch_size=batch_size,
                shuffle=shuffle,
                drop_last=drop_last,
                load_sparse_tensor=load_sparse_tensor,
                **loader_kwargs,
            )
            for name, indices in groups.items()
        }

    def __len__(self) -> int:
        return max(len(loader) for loader in self.loaders.values())

    def __iter__(self) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
        iterators = {name: iter(loader) for name, loader in self.loaders.items()}
        for _ in range(len(self)):
            batch = {}
            for name, loader in self.loaders.items():
                try:
                    batch[name] = next(iterators[name])
                except StopIteration:
                    # Re-creating the iterator reshuffles; itertools.cycle would replay cached
                    # batches and hold the whole smaller group in memory.
                    iterators[name] = iter(loader)
                    batch[name] = next(iterators[name])
            yield batch


def concatenate_sources(batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack the control and perturbed parts of a paired minibatch into one minibatch."""
    control, perturbed = batch[DATA_SOURCES.CONTROL], batch[DATA_SOURCES.PERTURBED]
    return {key: torch.cat([control[key], perturbed[key]], dim=0) for key in control}
