from __future__ import annotations

import numpy as np
import pytest
import scvi
from scipy import sparse

import compvi
from compvi.data import simulate_screen


def _latent(adata, **train_kwargs):
    scvi.settings.seed = 0
    compvi.ComparativeVI.setup_anndata(
        adata, condition_key="condition", control_category="control"
    )
    model = compvi.ComparativeVI(adata, n_background_latent=3, n_salient_latent=3, n_hidden=16)
    model.train(max_epochs=2, batch_size=32, enable_progress_bar=False, **train_kwargs)
    return model.get_latent_representation()


@pytest.mark.parametrize(
    ("layout", "train_kwargs"),
    [
        (sparse.csr_matrix, {}),
        (sparse.csc_matrix, {}),
        (sparse.csr_matrix, {"load_sparse_tensor": True}),
    ],
    ids=["csr", "csc", "csr-sparse-tensors"],
)
def test_sparse_counts_train_as_dense_counts_do(layout, train_kwargs):
    dense = simulate_screen(n_cells=300, n_genes=30, seed=5)
    dense.X = np.asarray(dense.X.toarray() if sparse.issparse(dense.X) else dense.X)
    stored = dense.copy()
    stored.X = layout(stored.X)
    np.testing.assert_allclose(
        _latent(stored, **train_kwargs), _latent(dense.copy()), rtol=1e-4, atol=1e-5
    )
    # the user's matrix stays sparse, in its layout
    assert isinstance(stored.X, layout)
