from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
from scipy import sparse
from scvi.model._utils import _init_library_size, scrna_raw_counts_properties

import compvi
from compvi.data import simulate_screen
from compvi.dataloaders import _row_blocks
from compvi.model._comparativevi import _library_log_moments
from compvi.model._count_summaries import paired_summaries, raw_summary


@pytest.fixture
def screen_file(tmp_path):
    adata = simulate_screen(n_cells=400, n_genes=30, n_batches=2, seed=4)
    adata.X = sparse.csr_matrix(adata.X)
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    return path


def _fit(adata, **model_kwargs):
    scvi.settings.seed = 0
    compvi.ComparativeVI.setup_anndata(
        adata, condition_key="condition", control_category="control", batch_key="batch"
    )
    model = compvi.ComparativeVI(
        adata, n_background_latent=3, n_salient_latent=3, n_hidden=16, **model_kwargs
    )
    model.train(max_epochs=2, batch_size=32, enable_progress_bar=False)
    return model


def test_a_backed_anndata_trains_and_answers_queries_as_in_memory(screen_file):
    backed = ad.read_h5ad(screen_file, backed="r")
    in_memory = ad.read_h5ad(screen_file)
    on_disk, loaded = _fit(backed), _fit(in_memory)
    for kind in ("salient", "background"):
        np.testing.assert_allclose(
            on_disk.get_latent_representation(representation_kind=kind),
            loaded.get_latent_representation(representation_kind=kind),
            atol=1e-5,
        )
    np.testing.assert_allclose(
        on_disk.get_normalized_expression(return_numpy=True),
        loaded.get_normalized_expression(return_numpy=True),
        rtol=1e-4,
    )
    scvi.settings.seed = 0
    de_disk = on_disk.differential_expression(reference="control", group1="P1", silent=True)
    scvi.settings.seed = 0
    de_memory = loaded.differential_expression(reference="control", group1="P1", silent=True)
    raw = [c for c in de_disk.columns if c.startswith(("raw_", "non_zeros"))]
    pd.testing.assert_frame_equal(de_disk[raw], de_memory.loc[de_disk.index, raw])


def test_unsorted_and_repeated_indices_come_back_in_the_order_asked(screen_file):
    backed = ad.read_h5ad(screen_file, backed="r")
    model = _fit(backed)
    everything = model.get_latent_representation()
    indices = np.array([399, 5, 200, 5, 17, 3, 398])
    np.testing.assert_allclose(
        model.get_latent_representation(indices=indices, batch_size=4),
        everything[indices],
        atol=1e-6,
    )


def test_a_backed_model_never_reads_more_than_a_block_or_a_minibatch(screen_file, monkeypatch):
    backed = ad.read_h5ad(screen_file, backed="r")
    monkeypatch.setattr(_row_blocks, "BLOCK_ROWS", 50)
    reads = []
    dataset_type = type(backed.X)
    read_rows = dataset_type.__getitem__

    def recording_read(self, index):
        block = read_rows(self, index)
        reads.append(block.shape[0])
        return block

    monkeypatch.setattr(dataset_type, "__getitem__", recording_read)
    model = _fit(backed, use_observed_lib_size=False)
    model.get_latent_representation(batch_size=64)
    for reference in ("control", "counterfactual"):
        model.differential_expression(reference=reference, group1="P1", batch_size=64, silent=True)
    assert reads, "the recording did not see the backed matrix being read"
    # At most a block of 50, a minibatch of 64, or the first 100 rows that scvi-tools' setup
    # samples to check for counts: never the whole matrix.
    assert max(reads) <= 100 < backed.n_obs
    assert sum(size > 64 for size in reads) == 1


def test_raw_count_summaries_match_scvi_tools_and_leave_the_anndata_alone(screen_file):
    adata = ad.read_h5ad(screen_file)
    compvi.ComparativeVI.setup_anndata(
        adata, condition_key="condition", control_category="control"
    )
    model = compvi.ComparativeVI(adata)
    columns_before = list(adata.obs.columns)
    cells = np.flatnonzero(adata.obs["condition"] == "P2")
    control = (adata.obs["condition"] == "control").to_numpy()
    ours = paired_summaries(raw_summary(adata.X, cells), raw_summary(adata.X, control))
    assert list(adata.obs.columns) == columns_before
    theirs = scrna_raw_counts_properties(model.adata_manager, cells, np.flatnonzero(control))
    assert set(ours) == set(theirs)
    for name, values in theirs.items():
        np.testing.assert_allclose(ours[name], values, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("backed", [False, True])
def test_library_moments_match_scvi_tools(screen_file, backed):
    adata = ad.read_h5ad(screen_file, backed="r" if backed else None)
    compvi.ComparativeVI.setup_anndata(
        adata, condition_key="condition", control_category="control", batch_key="batch"
    )
    manager = compvi.ComparativeVI(adata).adata_manager
    means, variances = _library_log_moments(manager, 2)
    memory = ad.read_h5ad(screen_file)
    compvi.ComparativeVI.setup_anndata(
        memory, condition_key="condition", control_category="control", batch_key="batch"
    )
    expected = _init_library_size(compvi.ComparativeVI(memory).adata_manager, 2)
    np.testing.assert_allclose(means, expected[0], rtol=1e-6)
    np.testing.assert_allclose(variances, expected[1], rtol=1e-5)
