from __future__ import annotations

import numpy as np
import pytest

import compvi


@pytest.fixture
def model(screen):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control"
    )
    vi = compvi.ComparativeVI(screen, n_hidden=16, n_background_latent=3, n_salient_latent=3)
    vi.module.eval()
    return vi, screen


def test_normalized_expression_is_a_frequency_table_per_cell(model):
    vi, adata = model
    full = vi.get_normalized_expression()
    assert full.shape == (adata.n_obs, adata.n_vars)
    assert list(full.index) == list(adata.obs_names)
    assert list(full.columns) == list(adata.var_names)
    np.testing.assert_allclose(full.sum(axis=1), 1.0, rtol=1e-5)
    scaled = vi.get_normalized_expression(library_size=1e4, return_numpy=True)
    np.testing.assert_allclose(scaled, full.to_numpy() * 1e4, rtol=1e-5)


def test_background_kind_removes_the_salient_part_of_perturbed_cells_only(model):
    vi, adata = model
    full = vi.get_normalized_expression(kind="full")
    background = vi.get_normalized_expression(kind="background")
    control = (adata.obs["condition"] == "control").to_numpy()
    # float32 tolerances: the decodes are float32, and BLAS may sum a row in another order
    # depending on the other cells of its minibatch.
    np.testing.assert_allclose(
        full[control].to_numpy(), background[control].to_numpy(), rtol=1e-5, atol=1e-8
    )
    per_cell = np.abs(full[~control].to_numpy() - background[~control].to_numpy()).max(axis=1)
    assert (per_cell > 1e-6).all()


def test_gene_list_and_indices_select_the_same_values(model):
    vi, adata = model
    full = vi.get_normalized_expression()
    genes = ["gene_5", "gene_1"]
    subset = vi.get_normalized_expression(indices=[3, 0, 7], gene_list=genes)
    assert list(subset.index) == list(adata.obs_names[[3, 0, 7]])
    # Another minibatch (3 cells, not all of them) may change the order of float32 sums.
    np.testing.assert_allclose(
        subset.to_numpy(), full.loc[subset.index, genes].to_numpy(), rtol=1e-5, atol=1e-8
    )


def test_expression_argument_errors(model):
    vi, _ = model
    with pytest.raises(ValueError, match="kind='counterfactual' is not one of"):
        vi.get_normalized_expression(kind="counterfactual")
    with pytest.raises(KeyError, match=r"gene_list has genes not in adata\.var_names"):
        vi.get_normalized_expression(gene_list=["gene_0", "TP53"])
    with pytest.raises(KeyError, match="groupby='target'"):
        vi.get_salient_effect(groupby="target")


def test_salient_effect_is_full_minus_background_and_zero_on_controls(model):
    vi, adata = model
    effect = vi.get_salient_effect(library_size=1.0)
    expected = vi.get_normalized_expression() - vi.get_normalized_expression(kind="background")
    np.testing.assert_allclose(effect.to_numpy(), expected.to_numpy(), atol=1e-6)
    by_condition = vi.get_salient_effect(groupby="condition", library_size=1.0)
    assert set(by_condition.index) == {"control", "P1", "P2", "P3"}
    np.testing.assert_array_equal(by_condition.loc["control"].to_numpy(), 0.0)
    p1 = (adata.obs["condition"] == "P1").to_numpy()
    np.testing.assert_allclose(by_condition.loc["P1"], effect[p1].mean(axis=0), atol=1e-6)


def test_transform_batch_keeps_cells_of_that_batch_and_moves_the_others(screen):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control", batch_key="batch"
    )
    vi = compvi.ComparativeVI(screen, n_hidden=16, n_background_latent=3, n_salient_latent=3)
    vi.module.eval()
    adata = screen
    own = vi.get_normalized_expression()
    batches = adata.obs["batch"].astype(str).to_numpy()
    target = batches[0]
    moved = vi.get_normalized_expression(transform_batch=target)
    same = batches == target
    np.testing.assert_allclose(moved[same].to_numpy(), own[same].to_numpy(), rtol=1e-5)
    assert np.abs(moved[~same].to_numpy() - own[~same].to_numpy()).max(axis=1).min() > 1e-7
    with pytest.raises(ValueError, match="not a valid batch category"):
        vi.get_normalized_expression(transform_batch="batch_99")


def test_posterior_samples_are_frequencies_and_average_near_the_mean_decode(model):
    vi, adata = model
    draws = vi.get_normalized_expression(n_samples=30, return_mean=False, indices=range(20))
    assert draws.shape == (30, 20, adata.n_vars)
    np.testing.assert_allclose(draws.sum(axis=-1), 1.0, rtol=1e-5)
    assert draws.std(axis=0).max() > 0
    averaged = vi.get_normalized_expression(n_samples=30, indices=range(20), return_numpy=True)
    at_mean = vi.get_normalized_expression(indices=range(20), return_numpy=True)
    assert np.corrcoef(np.log(averaged).ravel(), np.log(at_mean).ravel())[0, 1] > 0.95
    with pytest.raises(ValueError, match="n_samples must be None or a positive integer"):
        vi.get_normalized_expression(n_samples=0)
