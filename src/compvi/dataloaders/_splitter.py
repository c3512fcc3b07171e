"""Train/validation/test split done separately within control and perturbed cells."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from scvi import settings
from scvi.data import AnnDataManager

from .._constants import DATA_SOURCES
from ._device_data import DATA_PATHS, DataPath, DeviceData, choose_data_path, logger
from ._device_loaders import DevicePairedLoader
from ._paired import PairedDataLoader


def _split_counts(n: int, train_size: float, validation_size: float | None) -> tuple[int, int]:
    n_train = int(np.ceil(train_size * n))
    n_val = n - n_train if validation_size is None else int(np.floor(validation_size * n))
    return n_train, n_val


class ComparativeDataSplitter(pl.LightningDataModule):
    """Split control and perturbed cells into train, validation and test sets.

    Each group is split with the same fractions, so every set keeps the screen's ratio of
    control to perturbed cells, and loaders pair the two groups in each minibatch.

    Parameters
    ----------
    adata_manager
        Manager of the registered AnnData.
    control_indices, perturbed_indices
        Row indices of control and perturbed cells.
    train_size
        Fraction of each group used for training, in ``(0, 1]``.
    validation_size
        Fraction of each group used for validation; ``None`` uses the rest.
    shuffle_set_split
        Shuffle (seeded by ``scvi.settings.seed``) before splitting.
    load_sparse_tensor
        Load sparse count matrices as sparse tensors (host loader only: the device path
        densifies on the device).
    data_path
        Where minibatches come from. ``"auto"`` (the default) holds the registered data on
        the training device once and gathers every minibatch there
        (:class:`~compvi.dataloaders._device_loaders.DevicePairedLoader`) when the data are in
        memory (not backed), no :class:`~torch.utils.data.DataLoader` option is given and they take
        less than half of the GPU's free memory (on CPU: less than 8 GiB); otherwise the
        host loader (:class:`~compvi.dataloaders._paired.PairedDataLoader`) reads them, from
        memory or disk. ``"device"`` forces the first (and raises for backed data),
        ``"loader"`` the second. Both draw the same seeded minibatches, sharded the same
        way under distributed training (each process then holds the data on its device).
        The choice and its reason are logged once, at the INFO level, to the
        ``compvi.dataloaders._device_data`` logger.
    **loader_kwargs
        Passed to the loader: ``batch_size``, ``drop_last``, and for the host loader
        :class:`torch.utils.data.DataLoader`'s options (``num_workers``, ...).

    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        control_indices: Sequence[int],
        perturbed_indices: Sequence[int],
        train_size: float = 0.9,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        load_sparse_tensor: bool = False,
        data_path: str = "auto",
        **loader_kwargs,
    ) -> None:
        super().__init__()
        if data_path not in DATA_PATHS:
            raise ValueError(f"data_path={data_path!r} is not one of {DATA_PATHS}.")
        if not 0 < train_size <= 1:
            raise ValueError(f"train_size must be in (0, 1], got {train_size}.")
        if validation_size is not None and (
            validation_size < 0 or train_size + validation_size > 1
        ):
            raise ValueError(
                f"validation_size must be >= 0 with train_size + validation_size <= 1, got "
                f"train_size={train_size}, validation_size={validation_size}."
            )
        self.adata_manager = adata_manager
        self.groups = {
            DATA_SOURCES.CONTROL: np.asarray(control_indices),
            DATA_SOURCES.PERTURBED: np.asarray(perturbed_indices),
        }
        self.shuffle_set_split = shuffle_set_split
        self.load_sparse_tensor = load_sparse_tensor
        self.data_path = data_path
        self.loader_kwargs = loader_kwargs
        self.data_path_choice: DataPath | None = None
        self._device_data: DeviceData | None = None
        counts = {
            name: _split_counts(len(idx), train_size, validation_size)
            for name, idx in self.groups.items()
        }
        self.n_train = sum(n_train for n_train, _ in counts.values())
        self.n_val = sum(n_val for _, n_val in counts.values())
        self._counts = counts

    def setup(self, stage: str | None = None) -> None:
        """Assign each group's cells to the train, validation and test sets."""
        rng = np.random.RandomState(seed=settings.seed)
        self.split = {}
        for name, indices in self.groups.items():
            ordered = rng.permutation(indices) if self.shuffle_set_split else indices
            n_train, n_val = self._counts[name]
            self.split[name] = {
                "validation": ordered[:n_val],
                "train": ordered[n_val : n_val + n_train],
                "test": ordered[n_val + n_train :],
            }
        self.train_idx, self.val_idx, self.test_idx = (
            np.concatenate([self.split[name][part] for name in self.groups])
            for part in ("train", "validation", "test")
        )

    def _choose_data_path(self, device: torch.device, rank: int) -> DataPath:
        """Choose the data path once per splitter, log it, and hold the data if on device."""
        if self.data_path_choice is None:
            choice = choose_data_path(
                self.adata_manager,
                device,
                self.data_path,
                loader_options=list(self.loader_kwargs),
            )
            if rank == 0:
                logger.info(choice.describe())
            if choice.on_device:
                # One copy for the train, validation and test loaders.
                self._device_data = DeviceData(self.adata_manager, device)
            self.data_path_choice = choice
        return self.data_path_choice

    def _loader(self, part: str, shuffle: bool) -> PairedDataLoader | DevicePairedLoader | None:
        control = self.split[DATA_SOURCES.CONTROL][part]
        perturbed = self.split[DATA_SOURCES.PERTURBED][part]
        if len(control) == 0 or len(perturbed) == 0:
            return None
        # Attached to a trainer, each process of distributed training loads its own shard
        # (and on the device path holds the data on its own device).
        trainer = getattr(self, "trainer", None)
        rank = trainer.global_rank if trainer is not None else 0
        world_size = trainer.world_size if trainer is not None else 1
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        sampling = {"shuffle": shuffle, "rank": rank, "world_size": world_size}
        if self._choose_data_path(device, rank).on_device:
            return DevicePairedLoader(
                self._device_data, control, perturbed, **sampling, **self.loader_kwargs
            )
        return PairedDataLoader(
            self.adata_manager,
            control,
            perturbed,
            load_sparse_tensor=self.load_sparse_tensor,
            **sampling,
            **self.loader_kwargs,
        )

    def train_dataloader(self) -> PairedDataLoader | DevicePairedLoader:
        """Shuffled paired loader over the training cells."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> PairedDataLoader | DevicePairedLoader | None:
        """Paired loader over the validation cells, if both groups have some."""
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> PairedDataLoader | DevicePairedLoader | None:
        """Paired loader over the test cells, if both groups have some."""
        return self._loader("test", shuffle=False)

    def teardown(self, stage: str | None = None) -> None:
        """Free the device-resident data at the end of a fit: the trainer outlives it."""
        super().teardown(stage)
        if self._device_data is not None:
            self._device_data.release()
        self._device_data, self.data_path_choice = None, None
