from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist, squareform

import compvi
from compvi.pl._salient import _group_means

GROUPS = ["control", "A", "B", "C", "D"]
# A and B shift along s1, C and D along s2; every cell shares an offset the controls carry.
SHIFTS = {
    "control": [0.0, 0.0, 0.0],
    "A": [2.0, 0.0, 0.0],
    "B": [3.0, 0.2, 0.0],
    "C": [0.0, 2.0, 0.0],
    "D": [0.2, 2.5, 0.0],
}
OFFSET = np.array([0.5, -0.5, 1.0])


@pytest.fixture
def adata():
    rng = np.random.default_rng(0)
    condition = np.repeat(GROUPS, 24)
    salient = np.array([SHIFTS[c] for c in condition]) + OFFSET
    salient += rng.normal(scale=0.05, size=salient.shape)
    adata = ad.AnnData(
        X=rng.poisson(1.0, size=(len(condition), 8)).astype(np.float32),
        obs=pd.DataFrame(
            # "E" is a category without cells, which the plots must leave out.
            {"condition": pd.Categorical(condition, categories=[*GROUPS, "E"])},
            index=[f"cell{i}" for i in range(len(condition))],
        ),
    )
    adata.obsm["X_compvi_salient"] = salient
    return adata


def expected_means(adata, groups, controls=None):
    salient = adata.obsm["X_compvi_salient"]
    condition = adata.obs["condition"].to_numpy()
    means = np.stack([salient[condition == g].mean(axis=0) for g in groups])
    if controls is not None:
        means -= salient[np.isin(condition, controls)].mean(axis=0)
    return means


def tick_labels(labels):
    return [label.get_text() for label in labels]


def test_group_means_drops_controls_and_empty_categories(adata):
    means = _group_means(adata, "condition", "X_compvi_salient", "control")
    assert list(means.index) == ["A", "B", "C", "D"]
    assert list(means.columns) == ["s1", "s2", "s3"]
    np.testing.assert_allclose(means, expected_means(adata, "ABCD", ["control"]))
    np.testing.assert_allclose(means.loc["A"], [2, 0, 0], atol=0.05)


def test_salient_heatmap_shows_the_group_means(adata):
    ax = compvi.pl.salient_heatmap(adata, groupby="condition", show=False)
    np.testing.assert_allclose(ax.images[0].get_array(), expected_means(adata, GROUPS))
    assert tick_labels(ax.get_yticklabels()) == GROUPS
    assert tick_labels(ax.get_xticklabels()) == ["s1", "s2", "s3"]
    vmin, vmax = ax.images[0].get_clim()
    assert vmin == -vmax
    assert vmax == pytest.approx(np.abs(expected_means(adata, GROUPS)).max())
    colorbar = ax.images[0].colorbar
    assert colorbar.ax.get_ylabel() == "mean"
    plt.close(ax.figure)


def test_salient_heatmap_shows_shifts_from_pooled_controls(adata, tmp_path):
    path = tmp_path / "heatmap.png"
    ax = compvi.pl.salient_heatmap(
        adata, groupby="condition", control_category=["control", "A"], save=path, show=False
    )
    np.testing.assert_allclose(
        ax.images[0].get_array(), expected_means(adata, "BCD", ["control", "A"])
    )
    assert tick_labels(ax.get_yticklabels()) == ["B", "C", "D"]
    assert ax.images[0].colorbar.ax.get_ylabel() == "mean shift from controls"
    assert path.stat().st_size > 1_000
    plt.close(ax.figure)


def test_clustermap_puts_perturbations_that_act_alike_side_by_side(adata, tmp_path):
    path = tmp_path / "clustermap.pdf"
    fig = compvi.pl.perturbation_clustermap(
        adata, groupby="condition", control_category="control", save=path, show=False
    )
    assert len(fig.axes) == 3
    _, heat, colorbar = fig.axes
    order = tick_labels(heat.get_yticklabels())
    assert tick_labels(heat.get_xticklabels()) == order
    assert sorted(order) == ["A", "B", "C", "D"]
    assert abs(order.index("A") - order.index("B")) == 1
    assert abs(order.index("C") - order.index("D")) == 1

    means = expected_means(adata, order, ["control"])
    similarity = heat.images[0].get_array()
    np.testing.assert_allclose(similarity, 1 - squareform(pdist(means, "cosine")), atol=1e-12)
    a, b, c = order.index("A"), order.index("B"), order.index("C")
    assert similarity[a, b] == pytest.approx(1, abs=0.01)
    assert similarity[a, c] == pytest.approx(0, abs=0.1)
    np.testing.assert_allclose(np.diag(similarity), 1)
    assert heat.images[0].get_clim() == (-1, 1)
    assert colorbar.get_ylabel() == "cosine similarity"
    assert path.stat().st_size > 1_000
    plt.close(fig)


def test_clustermap_leaves_line_up_with_the_heatmap_rows(adata):
    fig = compvi.pl.perturbation_clustermap(
        adata, groupby="condition", control_category="control", show=False
    )
    tree, heat, _ = fig.axes
    # scipy draws leaf i of a left-oriented dendrogram at y = 10 * i + 5; with both y axes
    # running downwards, leaf i and heatmap row i sit at the same height.
    leaf_ys = {
        y
        for collection in tree.collections
        for path in collection.get_paths()
        for x, y in path.vertices
        if x == 0
    }
    assert sorted(leaf_ys) == [5, 15, 25, 35]
    assert tree.get_ylim() == (40, 0)
    assert heat.get_ylim() == (3.5, -0.5)
    plt.close(fig)


def test_clustermap_euclidean_shows_distances(adata):
    fig = compvi.pl.perturbation_clustermap(
        adata, groupby="condition", control_category="control", metric="euclidean", show=False
    )
    _, heat, colorbar = fig.axes
    order = tick_labels(heat.get_yticklabels())
    means = expected_means(adata, order, ["control"])
    np.testing.assert_allclose(heat.images[0].get_array(), squareform(pdist(means)))
    assert colorbar.get_ylabel() == "Euclidean distance"
    plt.close(fig)


@pytest.mark.parametrize("plot", [compvi.pl.salient_heatmap, compvi.pl.perturbation_clustermap])
def test_errors_name_what_is_wrong(adata, plot):
    open_figures = plt.get_fignums()
    with pytest.raises(KeyError, match=r"'perturbation' is not a column of adata\.obs"):
        plot(adata, groupby="perturbation", show=False)
    with pytest.raises(ValueError, match=r"Control label\(s\) \['ctrl'\] have no cells"):
        plot(adata, groupby="condition", control_category="ctrl", show=False)
    with pytest.raises(ValueError, match=r"\['E'\] have no cells"):
        plot(adata, groupby="condition", control_category=["control", "E"], show=False)
    with pytest.raises(KeyError, match=r"no 'X_other'.*add_results.*get_latent_representation"):
        plot(adata, groupby="condition", salient_key="X_other", show=False)
    adata.obsm["X_compvi_salient"][3, 1] = np.nan
    with pytest.raises(ValueError, match="contains NaN"):
        plot(adata, groupby="condition", show=False)
    assert plt.get_fignums() == open_figures  # errors come before any figure


def test_clustermap_errors(adata):
    open_figures = plt.get_fignums()
    with pytest.raises(ValueError, match="metric must be one of"):
        compvi.pl.perturbation_clustermap(adata, groupby="condition", metric="cityblock")
    adata.obs["arm"] = np.where(adata.obs["condition"] == "control", "control", "perturbed")
    with pytest.raises(ValueError, match="at least two groups"):
        compvi.pl.perturbation_clustermap(adata, groupby="arm", control_category="control")
    adata.obsm["X_compvi_salient"][adata.obs["arm"] == "control"] = 0
    with pytest.raises(ValueError, match="cosine distance is undefined"):
        compvi.pl.perturbation_clustermap(adata, groupby="arm")
    assert plt.get_fignums() == open_figures  # errors come before any figure
