from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import compvi

KEYS = ("X_compvi_background", "X_compvi_salient")


@pytest.fixture
def adata():
    rng = np.random.default_rng(0)
    n_cells = 120
    condition = np.repeat(["control", "A", "B", "C", "D"], n_cells // 5)
    cell_type = np.tile(["T", "B", "NK"], n_cells // 3)
    type_means = {"T": [3, 0, 0, 0], "B": [0, 3, 0, 0], "NK": [0, 0, 3, 0]}
    condition_means = {
        "control": [0, 0, 0],
        "A": [3, 0, 0],
        "B": [0, 3, 0],
        "C": [0, 0, 3],
        "D": [0, 0, -3],
    }
    adata = ad.AnnData(
        X=rng.poisson(1.0, size=(n_cells, 6)).astype(np.float32),
        obs=pd.DataFrame(
            {"condition": pd.Categorical(condition), "cell_type": pd.Categorical(cell_type)},
            index=[f"cell{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=[f"gene{i}" for i in range(6)]),
    )
    adata.obsm["X_compvi_background"] = np.array([type_means[t] for t in cell_type]) + rng.normal(
        scale=0.3, size=(n_cells, 4)
    )
    adata.obsm["X_compvi_salient"] = np.array(
        [condition_means[c] for c in condition]
    ) + rng.normal(scale=0.3, size=(n_cells, 3))
    return adata


def with_sentinels(adata):
    """Store known 'UMAP' coordinates that a plot must reuse rather than recompute."""
    rng = np.random.default_rng(1)
    sentinels = {key: rng.uniform(-10, 10, size=(adata.n_obs, 2)) for key in KEYS}
    for key, values in sentinels.items():
        adata.obsm[f"{key}_umap"] = values.copy()
    return sentinels


def plotted_points(ax):
    """Coordinates of the cells drawn in a panel, sorted; legend handles are empty."""
    points = max((c.get_offsets() for c in ax.collections), key=len)
    return np.asarray(points)[np.lexsort(np.asarray(points).T)]


def sorted_rows(values):
    return values[np.lexsort(values.T)]


def test_tl_umap_computes_and_stores_both_umaps(adata):
    before = set(adata.obsm)
    compvi.tl.umap(adata, n_neighbors=10)
    for key in KEYS:
        assert adata.obsm[f"{key}_umap"].shape == (adata.n_obs, 2)
        assert np.isfinite(adata.obsm[f"{key}_umap"]).all()
        assert adata.uns[f"{key}_neighbors"]["params"]["use_rep"] == key
        assert adata.uns[f"{key}_neighbors"]["params"]["n_neighbors"] == 10
        for kind in ("connectivities", "distances"):
            assert adata.obsp[f"{key}_neighbors_{kind}"].shape == (adata.n_obs, adata.n_obs)
        assert f"{key}_umap" in adata.uns
    assert set(adata.obsm) - before == {f"{key}_umap" for key in KEYS}
    assert "X_umap" not in adata.obsm and "neighbors" not in adata.uns
    # The background UMAP keeps the three cell types apart, the salient one the conditions:
    # each cell's nearest UMAP neighbour shares its label far more often than by chance.
    for key, label in (("X_compvi_background", "cell_type"), ("X_compvi_salient", "condition")):
        points = adata.obsm[f"{key}_umap"]
        distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
        np.fill_diagonal(distances, np.inf)
        labels = adata.obs[label].to_numpy()
        assert (labels[distances.argmin(1)] == labels).mean() > 0.8


def test_tl_umap_names_the_missing_representation_and_writes_nothing(adata):
    del adata.obsm["X_compvi_salient"]
    with pytest.raises(KeyError, match=r"no 'X_compvi_salient'.*representation_kind='salient'"):
        compvi.tl.umap(adata)
    assert not any(key.endswith("_umap") for key in adata.obsm)
    assert not any(key.endswith(("_neighbors", "_umap")) for key in adata.uns)


def test_embeddings_draws_the_stored_umaps_and_writes_nothing(adata, tmp_path):
    sentinels = with_sentinels(adata)
    path = tmp_path / "embeddings.png"
    uns_before, obsm_before = set(adata.uns), set(adata.obsm)
    fig = compvi.pl.embeddings(adata, color=["condition", "cell_type"], save=path, show=False)
    panels = fig.axes[:4]
    assert [ax.get_title() for ax in panels] == [
        "background: condition",
        "salient: condition",
        "background: cell_type",
        "salient: cell_type",
    ]
    for ax, key in zip(panels, KEYS * 2, strict=True):
        np.testing.assert_allclose(plotted_points(ax), sorted_rows(sentinels[key]), rtol=1e-6)
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("UMAP1", "UMAP2")
    for key in KEYS:
        np.testing.assert_array_equal(adata.obsm[f"{key}_umap"], sentinels[key])
    assert set(adata.obsm) == obsm_before
    # scanpy stores the colours of the categorical columns it draws, and nothing else.
    assert set(adata.uns) - uns_before == {"condition_colors", "cell_type_colors"}
    assert path.stat().st_size > 5_000
    plt.close(fig)


def test_embeddings_of_a_gene_adds_colourbars_after_the_panels(adata):
    with_sentinels(adata)
    fig = compvi.pl.embeddings(adata, color="gene2", show=False)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["background: gene2", "salient: gene2"]
    assert len(fig.axes) == 4
    plt.close(fig)


def test_embeddings_errors_name_what_is_missing(adata):
    open_figures = plt.get_fignums()
    with pytest.raises(KeyError, match=r"no 'X_compvi_background_umap'.*compvi\.tl\.umap\("):
        compvi.pl.embeddings(adata, color="condition", show=False)
    with_sentinels(adata)
    del adata.obsm["X_compvi_background"]
    with pytest.raises(
        KeyError,
        match=r"no 'X_compvi_background'.*model\.add_results\(adata\).*get_latent_representation\("
        r"representation_kind='background'\)",
    ):
        compvi.pl.embeddings(adata, color="condition", show=False)
    with pytest.raises(KeyError, match=r"Cannot colour by 'perturbation'"):
        compvi.pl.embeddings(adata, color=["condition", "perturbation"], show=False)
    with pytest.raises(ValueError, match="color must name at least one"):
        compvi.pl.embeddings(adata, color=[], show=False)
    assert not any(key.endswith(("_neighbors", "_umap")) for key in adata.uns)
    assert plt.get_fignums() == open_figures  # errors come before any figure


def test_more_cells_than_scanpys_approximate_neighbour_threshold():
    # Above 4,096 cells scanpy switches to approximate neighbours, whose sparse output broke
    # on SciPy sparse arrays; the UMAPs must still be computed and drawn.
    rng = np.random.default_rng(1)
    n_cells = 4200
    big = ad.AnnData(
        X=np.zeros((n_cells, 1), dtype=np.float32),
        obs=pd.DataFrame({"condition": pd.Categorical(rng.choice(["control", "A"], n_cells))}),
    )
    big.obs_names = [f"c{i}" for i in range(n_cells)]
    for key in KEYS:
        big.obsm[key] = rng.normal(size=(n_cells, 3))
    compvi.tl.umap(big)
    fig = compvi.pl.embeddings(big, color="condition", show=False)
    for key in KEYS:
        assert big.obsm[f"{key}_umap"].shape == (n_cells, 2)
    assert len(fig.axes[0].collections[0].get_offsets()) == n_cells
    plt.close(fig)
