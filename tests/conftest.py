from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import scvi

import compvi
from compvi.data import simulate_screen

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _seed():
    scvi.settings.seed = 0


@pytest.fixture
def screen():
    """A small simulated screen: 300 cells x 40 genes, three perturbations, two batches."""
    adata = simulate_screen(n_cells=300, n_genes=40, n_batches=2, seed=1)
    rng = np.random.default_rng(0)
    adata.obs["percent_mito"] = rng.uniform(0, 10, adata.n_obs)
    adata.obs["donor"] = rng.choice(["d1", "d2", "d3"], adata.n_obs)
    return adata


def fit(adata, *, max_epochs=3, setup=None, model=None, **train_kwargs):
    """Register, build and train a small ComparativeVI quietly."""
    compvi.ComparativeVI.setup_anndata(
        adata, condition_key="condition", control_category="control", **(setup or {})
    )
    vi = compvi.ComparativeVI(
        adata, n_background_latent=4, n_salient_latent=4, n_hidden=32, **(model or {})
    )
    train_kwargs.setdefault("batch_size", 64)
    vi.train(max_epochs=max_epochs, enable_progress_bar=False, **train_kwargs)
    return vi


@pytest.fixture(scope="module")
def trained():
    """A model trained long enough for its curves to mean something, shared by a module."""
    scvi.settings.seed = 0
    adata = simulate_screen(n_cells=600, n_genes=60, seed=2)
    return fit(adata, max_epochs=40), adata
