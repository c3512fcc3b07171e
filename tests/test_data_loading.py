from __future__ import annotations

import numpy as np
import pytest

import compvi
from compvi._constants import DATA_SOURCES, REGISTRY_KEYS
from compvi.dataloaders._paired import PairedDataLoader, ShardedBatchSampler, concatenate_sources
from compvi.dataloaders._splitter import ComparativeDataSplitter


@pytest.fixture
def manager(screen):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control"
    )
    model = compvi.ComparativeVI(screen)
    perturbed = model._is_perturbed(model.adata_manager)
    return model.adata_manager, np.flatnonzero(~perturbed), np.flatnonzero(perturbed)


def _codes(batch):
    return batch[REGISTRY_KEYS.CONDITION_KEY].ravel().long().numpy()


def test_every_batch_pairs_both_groups_and_the_larger_is_seen_once(manager):
    adata_manager, control, perturbed = manager
    loader = PairedDataLoader(adata_manager, control, perturbed, batch_size=32, shuffle=True)
    assert len(control) < len(perturbed)
    assert len(loader) == int(np.ceil(len(perturbed) / 32))
    seen_perturbed, seen_control = [], []
    for batch in loader:
        assert set(batch) == {DATA_SOURCES.CONTROL, DATA_SOURCES.PERTURBED}
        assert (_codes(batch[DATA_SOURCES.CONTROL]) == 0).all()
        assert (_codes(batch[DATA_SOURCES.PERTURBED]) > 0).all()
        seen_perturbed.append(batch[DATA_SOURCES.PERTURBED][REGISTRY_KEYS.X_KEY])
        seen_control.append(batch[DATA_SOURCES.CONTROL][REGISTRY_KEYS.X_KEY])
    assert sum(len(x) for x in seen_perturbed) == len(perturbed)
    # the smaller group restarts instead of stopping the epoch
    assert sum(len(x) for x in seen_control) > len(control)


def test_concatenate_sources_stacks_control_first(manager):
    adata_manager, control, perturbed = manager
    batch = next(iter(PairedDataLoader(adata_manager, control, perturbed, batch_size=8)))
    flat = concatenate_sources(batch)
    assert flat[REGISTRY_KEYS.X_KEY].shape[0] == 16
    np.testing.assert_array_equal(_codes(flat)[:8], 0)
    assert (_codes(flat)[8:] > 0).all()


def test_empty_group_raises(manager):
    adata_manager, control, _ = manager
    with pytest.raises(ValueError, match="at least one perturbed cell"):
        PairedDataLoader(adata_manager, control, [], batch_size=8)


def test_splitter_splits_each_group_and_keeps_sets_disjoint(manager):
    adata_manager, control, perturbed = manager
    splitter = ComparativeDataSplitter(
        adata_manager, control, perturbed, train_size=0.7, validation_size=0.2, batch_size=16
    )
    splitter.setup()
    parts = [set(splitter.train_idx), set(splitter.val_idx), set(splitter.test_idx)]
    assert sum(len(p) for p in parts) == len(control) + len(perturbed)
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    n_control_train = len(set(control) & parts[0])
    assert n_control_train == int(np.ceil(0.7 * len(control)))
    assert splitter.n_train == len(parts[0])
    assert splitter.val_dataloader() is not None and splitter.test_dataloader() is not None


@pytest.mark.parametrize(
    ("train_size", "validation_size", "match"),
    [(0.0, None, "train_size"), (0.9, 0.2, "validation_size")],
)
def test_splitter_rejects_bad_sizes(manager, train_size, validation_size, match):
    adata_manager, control, perturbed = manager
    with pytest.raises(ValueError, match=match):
        ComparativeDataSplitter(
            adata_manager,
            control,
            perturbed,
            train_size=train_size,
            validation_size=validation_size,
        )


def test_a_pass_is_drawn_at_the_first_minibatch_not_at_iter():
    # A resumed run sets the samplers' pass counters after Lightning calls iter() on the
    # loader and before the first minibatch: the pass must be drawn then, not earlier.
    sampler = ShardedBatchSampler(np.arange(50), 8, shuffle=True, seed=3)
    batches = iter(sampler)
    assert sampler.passes == 0
    sampler.passes = 4
    first = [next(batches), *batches]
    assert sampler.passes == 5
    sampler.passes = 4
    again = sampler.next_pass()
    for expected, batch in zip(first, again, strict=True):
        np.testing.assert_array_equal(expected, batch)
    assert sorted(np.concatenate(again)) == list(range(50))
    assert all((np.diff(batch) > 0).all() for batch in again)
