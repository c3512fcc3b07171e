from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from compvi.data import SETTINGS, simulate_screen, simulate_setting


def _log_profiles(adata: ad.AnnData) -> np.ndarray:
    x = adata.X.toarray()
    return np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4)


def _mean_profile_distance(profiles: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(profiles[a].mean(axis=0) - profiles[b].mean(axis=0)))


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    return simulate_screen(2000, 200, n_perturbations=3, seed=0)


def test_shapes_and_dtypes(adata):
    assert adata.shape == (2000, 200)
    assert sparse.issparse(adata.X) and adata.X.format == "csr"
    assert adata.X.dtype == np.float32
    counts = adata.X.toarray()
    assert (counts >= 0).all()
    np.testing.assert_array_equal(counts, np.round(counts))
    assert counts.sum() > 0
    assert adata.obs_names[0] == "cell_0" and adata.obs_names[-1] == "cell_1999"
    assert adata.var_names[0] == "gene_0" and adata.var_names[-1] == "gene_199"
    for key, dim in (("true_background", 4), ("true_salient", 4)):
        assert adata.obsm[key].shape == (2000, dim)
        assert adata.obsm[key].dtype == np.float32
    np.testing.assert_allclose(adata.obs["library_size"], counts.sum(axis=1))
    assert "batch" not in adata.obs


def test_library_size_mean(adata):
    # The observed totals average the drawn library sizes, whose mean is mean_library_size.
    assert adata.obs["library_size"].mean() == pytest.approx(2000.0, rel=0.03)


def test_conditions(adata):
    condition = adata.obs["condition"]
    assert condition.dtype == "category"
    assert condition.cat.categories.tolist() == ["control", "P1", "P2", "P3"]
    counts = condition.value_counts()
    assert counts["control"] == 600
    perturbation_counts = counts[["P1", "P2", "P3"]]
    assert perturbation_counts.sum() == 1400
    assert perturbation_counts.max() - perturbation_counts.min() <= 1
    # Conditions are shuffled over the cells rather than laid out in blocks.
    assert (condition.iloc[:600] == "control").mean() < 0.5


def test_every_perturbation_gets_a_cell():
    adata = simulate_screen(10, 5, n_perturbations=7, control_fraction=0.3)
    counts = adata.obs["condition"].value_counts()
    assert (counts > 0).all() and counts["control"] == 3


def test_salient_zero_exactly_on_controls_and_null_perturbations():
    adata = simulate_screen(600, 50, n_perturbations=3, perturbation_strength=[1.0, 0.0, 2.0])
    salient = adata.obsm["true_salient"]
    condition = adata.obs["condition"].to_numpy()
    zero_rows = (salient == 0).all(axis=1)
    np.testing.assert_array_equal(zero_rows, np.isin(condition, ["control", "P2"]))
    # Non-null perturbations give full-rank salient variation over their cells.
    assert np.linalg.matrix_rank(salient[np.isin(condition, ["P1", "P3"])]) == 4
    assert adata.uns["simulation"]["perturbation_strength"] == [1.0, 0.0, 2.0]


def test_strength_scales_salient_latent():
    weak = simulate_screen(300, 20, perturbation_strength=1.0, seed=3).obsm["true_salient"]
    strong = simulate_screen(300, 20, perturbation_strength=2.5, seed=3).obsm["true_salient"]
    np.testing.assert_allclose(strong, 2.5 * weak, rtol=1e-6)


def test_background_is_standard_normal(adata):
    background = adata.obsm["true_background"]
    np.testing.assert_allclose(background.mean(axis=0), 0, atol=0.1)
    np.testing.assert_allclose(np.cov(background.T), np.eye(4), atol=0.1)


def test_reproducible_with_seed():
    first = simulate_screen(300, 30, n_batches=2, seed=7)
    second = simulate_screen(300, 30, n_batches=2, seed=7)
    np.testing.assert_array_equal(first.X.toarray(), second.X.toarray())
    for key in ("true_background", "true_salient"):
        np.testing.assert_array_equal(first.obsm[key], second.obsm[key])
    assert first.obs.equals(second.obs)


def test_seeds_differ():
    first = simulate_screen(300, 30, seed=1)
    second = simulate_screen(300, 30, seed=2)
    assert not np.array_equal(first.X.toarray(), second.X.toarray())
    assert not np.array_equal(first.obsm["true_background"], second.obsm["true_background"])
    assert not first.obs["condition"].equals(second.obs["condition"])


@pytest.mark.parametrize("mixing", ["linear", "tanh"])
def test_mixings_share_latents_but_not_counts(adata, mixing):
    other = simulate_screen(2000, 200, n_perturbations=3, mixing=mixing, seed=0)
    for key in ("true_background", "true_salient"):
        np.testing.assert_array_equal(other.obsm[key], adata.obsm[key])
    assert not np.array_equal(other.X.toarray(), adata.X.toarray())
    assert other.uns["simulation"]["mixing"] == mixing


def test_batches():
    adata = simulate_screen(3000, 100, n_batches=3, seed=0)
    batch = adata.obs["batch"]
    assert batch.dtype == "category"
    assert batch.cat.categories.tolist() == ["batch_0", "batch_1", "batch_2"]
    assert (batch.value_counts() > 900).all()
    # Batches are assigned independently of the condition.
    control_share = (adata.obs["condition"] == "control").groupby(batch, observed=True).mean()
    np.testing.assert_allclose(control_share, 0.3, atol=0.05)
    # Batch offsets shift expression: two batches differ more than two halves of one batch.
    profiles = _log_profiles(adata)
    in_0 = np.flatnonzero(batch == "batch_0")
    between = _mean_profile_distance(profiles, in_0, np.flatnonzero(batch == "batch_1"))
    assert between > 3 * _mean_profile_distance(profiles, in_0[::2], in_0[1::2])


def test_salient_latent_changes_expression():
    adata = simulate_screen(2000, 200, n_perturbations=2, perturbation_strength=[1.0, 0.0], seed=0)
    profiles = _log_profiles(adata)
    condition = adata.obs["condition"].to_numpy()
    control = np.flatnonzero(condition == "control")
    noise = _mean_profile_distance(profiles, control[::2], control[1::2])
    effect = _mean_profile_distance(profiles, condition == "P1", condition == "control")
    assert effect > 3 * noise
    # A null perturbation is indistinguishable from controls.
    null_effect = _mean_profile_distance(profiles, condition == "P2", condition == "control")
    assert null_effect < 2 * noise


def test_background_latent_changes_expression(adata):
    # On control cells only the background varies; it should explain a good share of the
    # expression variance, far more than the same latent with its rows shuffled.
    control = (adata.obs["condition"] == "control").to_numpy()
    profiles = _log_profiles(adata)[control]
    background = adata.obsm["true_background"][control]

    def r2(design: np.ndarray) -> float:
        design = np.hstack([design, np.ones((len(design), 1))])
        coef, *_ = np.linalg.lstsq(design, profiles, rcond=None)
        residual = ((profiles - design @ coef) ** 2).sum()
        return 1 - residual / ((profiles - profiles.mean(axis=0)) ** 2).sum()

    shuffled = np.random.default_rng(0).permutation(background)
    assert r2(background) > 0.2
    assert r2(background) > 10 * r2(shuffled)


def test_parameters_round_trip_through_h5ad(adata, tmp_path):
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    read = ad.read_h5ad(path)
    params = read.uns["simulation"]
    assert params["n_cells"] == 2000 and params["mixing"] == "leaky_relu"
    np.testing.assert_allclose(params["perturbation_strength"], [1.0, 1.0, 1.0])
    assert read.obs["condition"].cat.categories.tolist() == ["control", "P1", "P2", "P3"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cells": 0}, "n_cells"),
        ({"n_cells": 10.0}, "n_cells"),
        ({"n_genes": -5}, "n_genes"),
        ({"n_perturbations": 0}, "n_perturbations"),
        ({"n_background_latent": 0}, "n_background_latent"),
        ({"n_salient_latent": True}, "n_salient_latent"),
        ({"n_hidden": 0}, "n_hidden"),
        ({"n_batches": 0}, "n_batches"),
        ({"control_fraction": 0.0}, "control_fraction"),
        ({"control_fraction": 1.0}, "control_fraction"),
        ({"control_fraction": float("nan")}, "control_fraction"),
        ({"perturbation_strength": [1.0, 1.0]}, "perturbation_strength"),
        ({"perturbation_strength": -1.0}, "perturbation_strength"),
        ({"perturbation_strength": [1.0, np.inf, 1.0]}, "perturbation_strength"),
        ({"perturbation_strength": "strong"}, "perturbation_strength"),
        ({"mixing": "relu"}, "mixing"),
        ({"dispersion": 0.0}, "dispersion"),
        ({"mean_library_size": -1.0}, "mean_library_size"),
        ({"seed": -1}, "seed"),
        ({"seed": None}, "seed"),
        ({"salient_scale_range": (0.0, 1.0)}, "salient_scale_range"),
        ({"salient_scale_range": (1.5, 0.5)}, "salient_scale_range"),
        ({"salient_scale_range": (0.5, np.inf)}, "salient_scale_range"),
        ({"salient_scale_range": 1.0}, "salient_scale_range"),
        ({"salient_scale_range": "wide"}, "salient_scale_range"),
        ({"salient_distribution": "gmm"}, "salient_distribution"),
        ({"salient_distribution": "mixture", "n_salient_components": 0}, "n_salient_components"),
        ({"salient_graph": np.ones((3, 3))}, r"shape \(n_perturbations, n_salient_latent\)"),
        ({"salient_graph": np.ones(4)}, r"got shape \(4,\)"),
        ({"salient_graph": np.full((3, 4), 0.7)}, r"only 0 \(no edge\) and 1"),
        ({"salient_graph": np.full((3, 4), np.nan)}, r"only 0 \(no edge\) and 1"),
        ({"salient_graph": [[1, 0], [1]]}, "salient_graph must be a 0/1 array"),
        (
            {"salient_graph": np.ones((3, 4)), "salient_distribution": "mixture"},
            "salient_graph cannot be combined with salient_distribution='mixture'",
        ),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_screen(**{"n_cells": 100, "n_genes": 10, **kwargs})


def test_too_few_cells():
    with pytest.raises(ValueError, match="n_cells=3 is too small"):
        simulate_screen(3, 10, n_perturbations=3, control_fraction=0.3)
    with pytest.raises(ValueError, match="at least one control cell"):
        simulate_screen(3, 10, n_perturbations=1, control_fraction=0.1)


# ------------------------------------------------------------ salient options
def test_default_random_streams_are_pinned():
    # Values from simulate_screen(500, 50, seed=3) before the salient options existed:
    # benchmark results depend on the default screens, so new options must not shift the
    # default draws. A change to any stream (conditions, latents, mixing, counts) breaks
    # one of these.
    adata = simulate_screen(500, 50, seed=3)
    codes = adata.obs["condition"].cat.codes.to_numpy()
    assert codes[:12].tolist() == [0, 1, 0, 3, 2, 2, 0, 3, 0, 1, 0, 3]
    np.testing.assert_allclose(
        adata.obsm["true_background"][0], [-2.196833, -0.041824, -0.399147, -2.093669], atol=1e-6
    )
    np.testing.assert_allclose(
        adata.obsm["true_salient"][[1, 3]],
        [[-0.095957, 0.308527, -0.082372, -3.692096], [-1.030989, 1.572913, 0.436242, 0.63237]],
        atol=1e-6,
    )
    assert adata.X.sum() == 997834
    np.testing.assert_array_equal(
        adata.X[:2, :6].toarray(), [[7, 1, 2, 2, 0, 1], [3, 12, 7, 4, 6, 4]]
    )
    assert "true_component" not in adata.obs
    params = adata.uns["simulation"]
    assert params["salient_scale_range"] == [0.5, 1.5]
    assert params["salient_distribution"] == "gaussian"
    assert "salient_graph" not in params


def _per_perturbation_std(adata: ad.AnnData) -> np.ndarray:
    salient = adata.obsm["true_salient"]
    condition = adata.obs["condition"]
    labels = condition.cat.categories[1:]
    return np.stack([salient[(condition == label).to_numpy()].std(axis=0) for label in labels])


def test_scale_range_sets_the_within_perturbation_spread():
    adata = simulate_screen(6000, 10, salient_scale_range=(0.8, 0.8), seed=1)
    np.testing.assert_allclose(_per_perturbation_std(adata), 0.8, rtol=0.08)
    # Only the scales change: the conditions and background latent do not.
    default = simulate_screen(6000, 10, seed=1)
    assert adata.obs["condition"].equals(default.obs["condition"])
    np.testing.assert_array_equal(adata.obsm["true_background"], default.obsm["true_background"])


GRAPH = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 1, 1, 0]])


def test_graph_moves_only_the_factors_on_edges():
    adata = simulate_screen(3000, 20, salient_graph=GRAPH, perturbation_strength=2.0, seed=2)
    salient = adata.obsm["true_salient"]
    condition = adata.obs["condition"].to_numpy()
    for k, row in enumerate(GRAPH):
        cells = salient[condition == f"P{k + 1}"]
        off, on = row == 0, row == 1
        # Exactly 0, and +0.0 rather than -0.0, off the edges.
        assert (cells[:, off] == 0).all() and not np.signbit(cells[:, off]).any()
        assert (cells[:, on].std(axis=0) > 0.5).all()
        # Edge means have magnitude in [1, 2], times the strength 2.
        magnitudes = np.abs(cells[:, on].mean(axis=0)) / 2.0
        assert ((magnitudes > 0.85) & (magnitudes < 2.15)).all()
    assert (salient[condition == "control"] == 0).all()
    assert adata.uns["simulation"]["salient_graph"] == GRAPH.tolist()
    default = simulate_screen(3000, 20, perturbation_strength=2.0, seed=2)
    np.testing.assert_array_equal(adata.obsm["true_background"], default.obsm["true_background"])


def test_graph_accepts_booleans_and_data_frames():
    frame = pd.DataFrame(GRAPH.astype(bool), index=["P1", "P2", "P3"])
    from_frame = simulate_screen(300, 10, salient_graph=frame, seed=0).obsm["true_salient"]
    from_array = simulate_screen(300, 10, salient_graph=GRAPH, seed=0).obsm["true_salient"]
    np.testing.assert_array_equal(from_frame, from_array)


def test_mixture_components_carry_the_stored_parameters(tmp_path):
    adata = simulate_screen(
        9000,
        10,
        salient_distribution="mixture",
        n_salient_components=3,
        perturbation_strength=[1.0, 2.0, 0.0],
        seed=5,
    )
    params = adata.uns["simulation"]
    means = np.array(params["component_means"])
    scales = np.array(params["component_scales"])
    weights = np.array(params["component_weights"])
    assert means.shape == scales.shape == (3, 4) and weights.shape == (3, 3)
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 2.0)
    assert ((scales >= 0.5) & (scales <= 1.5)).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)

    component = adata.obs["true_component"].to_numpy()
    condition = adata.obs["condition"].to_numpy()
    salient = adata.obsm["true_salient"]
    # -1 exactly where the salient latent is 0: controls and the null perturbation P3.
    np.testing.assert_array_equal(component == -1, np.isin(condition, ["control", "P3"]))
    for k in (0, 1):
        in_k = condition == f"P{k + 1}"
        shares = np.bincount(component[in_k], minlength=3) / in_k.sum()
        np.testing.assert_allclose(shares, weights[k], atol=0.04)
    # Divided by its perturbation's strength, each component's cells have the stored mean
    # and scales.
    strength = np.select([condition == "P1", condition == "P2"], [1.0, 2.0], 1.0)
    unscaled = salient / strength[:, None]
    for c in range(3):
        cells = unscaled[component == c]
        assert len(cells) > 900
        np.testing.assert_allclose(cells.mean(axis=0), means[c], atol=0.1)
        np.testing.assert_allclose(cells.std(axis=0), scales[c], rtol=0.1)

    path = tmp_path / "mixture.h5ad"
    adata.write_h5ad(path)
    read = ad.read_h5ad(path)
    np.testing.assert_array_equal(read.obs["true_component"], component)
    np.testing.assert_allclose(read.uns["simulation"]["component_means"], means)


def test_conditional_screen_varies_the_variances_over_perturbations():
    adata = simulate_setting("conditional_screen", n_cells=6000, n_genes=10)
    assert adata.obs["condition"].cat.categories.size == 11
    std = _per_perturbation_std(adata)
    # Scales drawn from [0.3, 2.0]: along every factor some perturbations spread the
    # cells several times more than others.
    assert (std.max(axis=0) / std.min(axis=0) > 2.5).all()


def test_mixture_screen_draws_from_a_mixture():
    adata = simulate_setting("mixture_screen", n_cells=600, n_genes=10)
    params = adata.uns["simulation"]
    assert params["salient_distribution"] == "mixture"
    assert params["n_salient_components"] == 4
    component = adata.obs["true_component"]
    assert set(component[adata.obs["condition"] != "control"]) <= {0, 1, 2, 3}


def test_sparse_screen_graph_distinguishes_the_factors():
    graph = np.array(SETTINGS["sparse_screen"].simulation["salient_graph"])
    assert graph.shape == (8, 5)
    assert set(graph.sum(axis=1)) <= {1, 2}
    assert (graph.sum(axis=0) >= 2).all()
    assert len({tuple(row) for row in graph}) == len(graph)
    # Mechanism-sparsity criterion: the perturbations moving factor j share only j.
    for j in range(graph.shape[1]):
        shared = graph[graph[:, j] == 1].all(axis=0)
        assert np.flatnonzero(shared).tolist() == [j]
    adata = simulate_setting("sparse_screen", n_cells=800, n_genes=10)
    np.testing.assert_array_equal(adata.uns["simulation"]["salient_graph"], graph)
    salient = adata.obsm["true_salient"]
    condition = adata.obs["condition"].to_numpy()
    for k, row in enumerate(graph):
        moved = (salient[condition == f"P{k + 1}"] != 0).any(axis=0)
        np.testing.assert_array_equal(moved, row == 1)


# --------------------------------------------------------------- named settings
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_named_settings_simulate_what_they_describe(name):
    adata = simulate_setting(name, n_cells=300, n_genes=30, seed=4)
    setting = SETTINGS[name]
    assert adata.uns["simulation"]["setting"] == name
    assert adata.uns["simulation"]["mixing"] == setting.simulation["mixing"]
    assert adata.obsm["true_background"].shape[1] == setting.n_background_latent == 4
    assert adata.obsm["true_salient"].shape[1] == setting.n_salient_latent
    assert setting.n_salient_latent == (5 if name == "sparse_screen" else 4)
    assert setting.piecewise_affine == (setting.simulation["mixing"] != "tanh")


def test_graded_screen_has_null_perturbations():
    adata = simulate_setting("graded_screen", n_cells=600, n_genes=30)
    salient = adata.obsm["true_salient"]
    for label in ("P5", "P6"):
        assert (salient[(adata.obs["condition"] == label).to_numpy()] == 0).all()
    strong = np.linalg.norm(salient[(adata.obs["condition"] == "P1").to_numpy()], axis=1)
    weak = np.linalg.norm(salient[(adata.obs["condition"] == "P4").to_numpy()], axis=1)
    assert strong.mean() > 2 * weak.mean()


def test_unknown_setting_raises():
    with pytest.raises(ValueError, match="Unknown setting 'tanh'"):
        simulate_setting("tanh")
