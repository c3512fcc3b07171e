"""Minibatch loaders that gather rows from :class:`~._device_data.DeviceData` on the device.

:class:`DevicePairedLoader` serves training (control and perturbed minibatches from the same
samplers as the host loader) and :class:`DeviceInOrderLoader` serves inference, in the
order of the cells asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from scvi.data import AnnDataManager

from .._constants import DATA_SOURCES
from ._device_data import DeviceData, choose_data_path, logger, to_device
from ._paired import InOrderDataLoader, paired_samplers


def _draw_as_a_data_loader_does() -> None:
    """Draw what :class:`torch.utils.data.DataLoader` draws from torch's global generator.

    Every ``iter()`` of a DataLoader draws one number (its workers' base seed) from the
    global CPU generator, which dropout and posterior samples on CPU draw from too. Drawing
    it here, where the host loader would, keeps seeded runs on either path identical.
    """
    torch.empty((), dtype=torch.int64).random_()


class _Pass:
    """The minibatches of one pass over a group: rows copied to the device once."""

    def __init__(self, data: DeviceData, batches: list[np.ndarray]) -> None:
        if not batches:  # no cells asked for
            self.steps = []
            return
        order = np.concatenate(batches).astype(np.int64, copy=False)
        bounds = np.concatenate([[0], np.cumsum([len(batch) for batch in batches])])
        rows = to_device(order, data.device)
        nonzeros = data.nonzeros(order, bounds)
        self.steps = [
            (rows[start:stop], int(count))
            for start, stop, count in zip(bounds[:-1], bounds[1:], nonzeros, strict=True)
        ]


class DevicePairedLoader:
    """Paired control and perturbed minibatches gathered from device-resident data.

    Draws the same minibatches, in the same order, as
    :class:`~compvi.dataloaders._paired.PairedDataLoader` with the same arguments and seed
    (through the same :class:`~compvi.dataloaders._paired.ShardedBatchSampler`, sharded under
    distributed training: every process holds the data and gathers its own shard), and
    yields the same dicts of registry tensors, already on the device. Counts are always
    dense.

    Parameters
    ----------
    data
        The held data.
    control_indices, perturbed_indices
        Row indices of control and perturbed cells (rows of ``data``); both non-empty.
    batch_size
        Cells per group in each minibatch (on each process).
    shuffle
        Reshuffle each group at every pass.
    drop_last
        Drop each group's last incomplete minibatch.
    rank, world_size
        This process's rank and the number of processes of distributed training.

    """

    def __init__(
        self,
        data: DeviceData,
        control_indices: Sequence[int],
        perturbed_indices: Sequence[int],
        *,
        batch_size: int = 128,
        shuffle: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.data = data
        self.samplers = paired_samplers(
            {DATA_SOURCES.CONTROL: control_indices, DATA_SOURCES.PERTURBED: perturbed_indices},
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )

    def __len__(self) -> int:
        return max(len(sampler) for sampler in self.samplers.values())

    def __iter__(self) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
        # As the host loader: each group starts a pass at the epoch's first step, and the
        # smaller group a new one whenever it runs out.
        for _ in self.samplers:
            _draw_as_a_data_loader_does()
        steps: dict[str, Iterator | None] = dict.fromkeys(self.samplers)
        for _ in range(len(self)):
            batch = {}
            for name, sampler in self.samplers.items():
                step = None if steps[name] is None else next(steps[name], None)
                if step is None:
                    if steps[name] is not None:  # a restart within the epoch
                        _draw_as_a_data_loader_does()
                    steps[name] = iter(_Pass(self.data, sampler.next_pass()).steps)
                    step = next(steps[name])
                batch[name] = self.data.gather(*step)
            yield batch


class DeviceInOrderLoader:
    """Minibatches of the chosen cells, in the order given, from device-resident data.

    The distinct cells asked for (all, when ``indices`` is ``None``) are held on the device
    once, then each minibatch is gathered there; it yields what
    :class:`~compvi.dataloaders._paired.InOrderDataLoader` yields, on the device.

    Parameters
    ----------
    adata_manager
        Manager of the registered, in-memory AnnData.
    indices
        Row indices (or a boolean mask) of the cells; ``None`` uses all, in order.
    batch_size
        Cells per minibatch.
    device
        Where to hold the data and gather the minibatches.

    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int = 128,
        *,
        device: torch.device | str = "cpu",
    ) -> None:
        n_obs = adata_manager.adata.shape[0]
        if indices is None:
            self.indices = np.arange(n_obs)
            held, positions = None, self.indices
        else:
            self.indices = np.asarray(indices)
            if self.indices.dtype == bool:
                self.indices = np.flatnonzero(self.indices)
            held, positions = np.unique(self.indices, return_inverse=True)
        self.data = DeviceData(adata_manager, device, rows=held)
        self.batch_size = batch_size
        starts = range(0, len(self.indices), batch_size)
        self._pass = _Pass(self.data, [positions[s : s + batch_size] for s in starts])

    def __len__(self) -> int:
        return len(self._pass.steps)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        _draw_as_a_data_loader_does()
        for rows, nonzeros in self._pass.steps:
            yield self.data.gather(rows, nonzeros)


def in_order_loader(
    adata_manager: AnnDataManager,
    indices: Sequence[int] | np.ndarray | None,
    batch_size: int,
    device: torch.device | str,
    data_path: str = "auto",
    **loader_kwargs,
):
    """Return the inference loader of the chosen path: device-resident data or host loader.

    Chooses as :func:`choose_data_path` (for the distinct cells asked for) and says which
    at the DEBUG level (inference runs often; training logs its choice at INFO).
    """
    rows = None
    if indices is not None:
        rows = np.asarray(indices)
        rows = np.flatnonzero(rows) if rows.dtype == bool else np.unique(rows)
    choice = choose_data_path(
        adata_manager,
        device,
        data_path,
        rows=rows,
        loader_options=[name for name in loader_kwargs if name != "batch_size"],
    )
    logger.debug(choice.describe())
    if choice.on_device:
        return DeviceInOrderLoader(adata_manager, indices, batch_size, device=choice.device)
    return InOrderDataLoader(adata_manager, indices, batch_size=batch_size, **loader_kwargs)
