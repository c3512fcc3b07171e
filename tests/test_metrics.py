from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from compvi.metrics import (
    affine_r2,
    knn_r2,
    leakage,
    match_factors,
    mcc,
    random_rotation_floor,
    seed_stability,
    structural_hamming_distance,
)

# Two exactly uncorrelated, zero-mean columns of equal variance (1/2), for hand computations.
A = np.array([1.0, -1.0, 0.0, 0.0])
B = np.array([0.0, 0.0, 1.0, -1.0])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


# --- affine_r2 -------------------------------------------------------------------------


def test_affine_r2_is_one_for_invertible_affine_map(rng):
    z = rng.normal(size=(1000, 3))
    mixing = rng.normal(size=(3, 3)) + 3 * np.eye(3)
    learned = z @ mixing + np.array([5.0, -2.0, 0.5])
    assert affine_r2(z, learned) == pytest.approx(1.0, abs=1e-6)
    # Extra uninformative learned columns do not hurt an exact fit.
    wide = np.hstack([learned, rng.normal(size=(1000, 2))])
    assert affine_r2(z, wide) == pytest.approx(1.0, abs=1e-6)


def test_affine_r2_is_near_zero_for_independent_noise(rng):
    score = affine_r2(rng.normal(size=(3000, 3)), rng.normal(size=(3000, 3)))
    assert abs(score) < 0.02


def test_affine_r2_matches_analytic_value(rng):
    # true = x + e with var(x) = var(e) = 1 has R^2 = var(x) / (var(x) + var(e)) = 1/2.
    learned = rng.normal(size=(20000, 3))
    true = learned[:, 0] + rng.normal(size=20000)
    assert affine_r2(true, learned) == pytest.approx(0.5, abs=0.02)


def test_affine_r2_averages_columns_uniformly(rng):
    # One perfectly predicted column (R^2 = 1) and one unpredictable column (R^2 = 0).
    learned = rng.normal(size=(20000, 2))
    true = np.column_stack([2 * learned[:, 0] + 1, rng.normal(size=20000)])
    assert affine_r2(true, learned) == pytest.approx(0.5, abs=0.02)


def test_affine_r2_drops_constant_columns(rng):
    z = rng.normal(size=200)
    true = np.column_stack([z, np.zeros(200)])
    assert affine_r2(true, 3 * z - 1) == pytest.approx(1.0, abs=1e-6)


def test_affine_r2_split_depends_on_random_state(rng):
    learned = rng.normal(size=(200, 2))
    true = learned[:, 0] + rng.normal(size=200)
    assert affine_r2(true, learned, random_state=0) != affine_r2(true, learned, random_state=1)


@pytest.mark.parametrize(
    ("true", "learned", "kwargs", "match"),
    [
        (np.ones((20, 2)), np.ones((20, 2)), {}, "constant on the held-out rows"),
        (np.zeros((20, 2)), np.zeros((19, 2)), {}, "true has 20, learned has 19 rows"),
        (np.full((20, 1), np.nan), np.zeros((20, 1)), {}, "true contains NaN"),
        (np.zeros((20, 1)), np.full((20, 1), np.inf), {}, "learned contains NaN or infinite"),
        (np.zeros((9, 1)), np.zeros((9, 1)), {}, "at least 10 rows"),
        (np.zeros((20, 1, 1)), np.zeros((20, 1)), {}, r"true must be an array of shape"),
        (np.zeros((20, 0)), np.zeros((20, 1)), {}, r"true must be an array of shape"),
        (np.zeros((20, 1)), np.zeros((20, 1)), {"test_size": 1.5}, "test_size"),
        (np.zeros((20, 1)), np.zeros((20, 1)), {"test_size": 5}, "test_size"),
    ],
)
def test_affine_r2_errors(true, learned, kwargs, match):
    with pytest.raises(ValueError, match=match):
        affine_r2(true, learned, **kwargs)


# --- mcc -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_mcc_is_one_for_permutation_scaling_and_sign_flip(rng, method):
    z = rng.normal(size=(500, 4))
    learned = z[:, [2, 0, 3, 1]] * np.array([2.0, -3.0, 0.5, -1.0]) + 7.0
    assert mcc(z, learned, method=method) == pytest.approx(1.0, abs=1e-12)


def test_mcc_hand_computed_2x2():
    true = np.column_stack([A, B])
    # Every entry of |corr| is 1/sqrt(2) for a 45-degree rotation.
    assert mcc(true, np.column_stack([A + B, A - B])) == pytest.approx(1 / np.sqrt(2))
    # |corr| = [[1, 1/sqrt(2)], [0, 1/sqrt(2)]]: the best matching is the diagonal.
    expected = (1 + 1 / np.sqrt(2)) / 2
    assert mcc(true, np.column_stack([A, A + B])) == pytest.approx(expected)


def test_mcc_spearman_is_invariant_to_monotone_maps_but_pearson_is_not(rng):
    z = rng.normal(size=(1000, 3))
    learned = np.exp(2 * z[:, [1, 2, 0]])
    assert mcc(z, learned, method="spearman") == pytest.approx(1.0, abs=1e-12)
    assert mcc(z, learned, method="pearson") < 0.9


def test_mcc_rectangular_matches_each_true_column_to_its_own_learned_column():
    true = np.column_stack([A, B])
    # Column A would be the best match for both true columns; B must take A + B instead.
    square = np.column_stack([A + B, A])
    assert mcc(true, square) == pytest.approx((1 + 1 / np.sqrt(2)) / 2)
    # An extra learned column equal to B lets both true columns be matched perfectly.
    assert mcc(true, np.column_stack([A + B, A, -2 * B])) == pytest.approx(1.0)


def test_mcc_counts_constant_learned_columns_as_uncorrelated():
    true = np.column_stack([A, B])
    # 0.1 is not exactly representable: the column must still count as constant.
    assert mcc(true, np.column_stack([A, np.full(4, 0.1)])) == pytest.approx(0.5)


def test_mcc_accepts_one_dimensional_inputs(rng):
    z = rng.normal(size=100)
    assert mcc(z, -z) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("true", "learned", "kwargs", "match"),
    [
        (np.ones((10, 3)), np.ones((10, 2)), {}, "at least as many columns as true"),
        (np.column_stack([A, np.ones(4)]), np.ones((4, 2)), {}, "true has constant columns"),
        (np.column_stack([A, B]), np.column_stack([A, B]), {"method": "kendall"}, "method"),
        (np.zeros((10, 2)), np.zeros((8, 2)), {}, "true has 10, learned has 8 rows"),
        (np.zeros((2, 1)), np.zeros((2, 1)), {}, "at least 3 rows"),
        (np.full((10, 1), np.nan), np.zeros((10, 1)), {}, "true contains NaN"),
    ],
)
def test_mcc_errors(true, learned, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mcc(true, learned, **kwargs)


# --- random_rotation_floor -------------------------------------------------------------


def test_random_rotation_floor_at_four_dimensions(rng):
    z = rng.normal(size=(2000, 4))
    floor = random_rotation_floor(z, n_repeats=30)
    assert 0.6 < floor < 0.9
    # Component recovery (a permutation) sits well above the floor.
    assert mcc(z, z[:, ::-1]) > floor + 0.05


def test_random_rotation_floor_is_one_in_one_dimension(rng):
    assert random_rotation_floor(rng.normal(size=(100, 1))) == pytest.approx(1.0)


def test_random_rotation_floor_decreases_with_dimension(rng):
    floors = [random_rotation_floor(rng.normal(size=(1000, d)), n_repeats=20) for d in (2, 8)]
    assert floors[0] > floors[1]


def test_random_rotation_floor_is_reproducible(rng):
    z = rng.normal(size=(300, 3))
    assert random_rotation_floor(z, random_state=3) == random_rotation_floor(z, random_state=3)
    assert random_rotation_floor(z, random_state=3) != random_rotation_floor(z, random_state=4)


@pytest.mark.parametrize("n_repeats", [0, 2.5, True])
def test_random_rotation_floor_rejects_bad_repeats(n_repeats):
    with pytest.raises(ValueError, match="n_repeats"):
        random_rotation_floor(np.column_stack([A, B]), n_repeats=n_repeats)


# --- leakage ---------------------------------------------------------------------------


@pytest.fixture
def latents(rng):
    n = 2000
    is_perturbed = np.arange(n) >= 600
    background = rng.normal(size=(n, 4))
    salient = rng.normal(size=(n, 4)) * is_perturbed[:, None]
    return background, salient, is_perturbed


def test_leakage_detects_salient_signal_in_background(rng, latents):
    background, salient, is_perturbed = latents
    mixing = rng.normal(size=(8, 8)) + 3 * np.eye(8)
    leaky_background = np.hstack([background, salient]) @ mixing
    scores = leakage(
        background, salient, leaky_background, salient @ rng.normal(size=(4, 4)), is_perturbed
    )
    assert scores["salient_from_background"] > 0.99
    assert abs(scores["background_from_salient"]) < 0.05
    assert scores["control_salient_norm"] == 0.0


def test_leakage_is_near_zero_for_separated_blocks(rng, latents):
    background, salient, is_perturbed = latents
    scores = leakage(
        background,
        salient,
        background @ rng.normal(size=(4, 4)),
        salient @ rng.normal(size=(4, 4)),
        is_perturbed,
    )
    assert set(scores) == {
        "salient_from_background",
        "background_from_salient",
        "salient_from_background_knn",
        "background_from_salient_knn",
        "control_salient_norm",
    }
    for key in ("salient_from_background", "background_from_salient"):
        assert abs(scores[key]) < 0.05
    # A 15-neighbour mean of unrelated rows scores about -1/15, not 0.
    for key in ("salient_from_background_knn", "background_from_salient_knn"):
        assert -0.12 < scores[key] < 0.05


def test_knn_leakage_sees_a_salient_factor_bent_into_the_background(rng, latents):
    background, salient, is_perturbed = latents
    # The first true salient factor is the square of a coordinate the learned background
    # holds: no affine read-out finds it, a nearest-neighbour one does.
    hidden = rng.normal(size=len(is_perturbed))
    salient = salient.copy()
    salient[is_perturbed, 0] = (hidden[is_perturbed] ** 2 - 1) / np.sqrt(2)
    learned_background = np.column_stack([background, hidden])
    scores = leakage(background, salient, learned_background, salient, is_perturbed)
    assert abs(scores["salient_from_background"]) < 0.05
    # One of four salient columns is read well, the others score about -1/15.
    assert scores["salient_from_background_knn"] > 0.1


def test_knn_r2_recovers_a_smooth_nonlinear_map_and_not_noise(rng):
    z = rng.uniform(-2, 2, size=(1500, 2))
    target = np.column_stack([np.sin(2 * z[:, 0]), z[:, 1] ** 2])
    assert knn_r2(target, z) > 0.95
    assert affine_r2(target, z) < 0.3
    assert abs(knn_r2(target, rng.normal(size=(1500, 2)))) < 0.1
    # One neighbour on the training rows themselves would be perfect: scores are held out.
    assert knn_r2(target, z, n_neighbors=1) < 0.999


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_neighbors": 0}, "n_neighbors must be a positive integer"),
        ({"n_neighbors": 500}, "more than"),
    ],
)
def test_knn_r2_errors(rng, kwargs, match):
    z = rng.normal(size=(100, 2))
    with pytest.raises(ValueError, match=match):
        knn_r2(z, z, **kwargs)


def test_leakage_detects_background_signal_in_salient(rng, latents):
    background, salient, is_perturbed = latents
    scores = leakage(background, salient, background, salient + background, is_perturbed)
    # Half the variance of salient + background comes from the background, but an affine
    # map cannot separate the two: R^2 of each background column is 1/2.
    assert scores["background_from_salient"] == pytest.approx(0.5, abs=0.05)


def test_leakage_control_salient_norm_hand_computed(rng, latents):
    background, salient, is_perturbed = latents
    # Controls: norm 0.5; perturbed cells alternate norms 5 and 2, mean 3.5.
    learned_salient = np.tile([0.3, 0.4], (len(is_perturbed), 1))
    n_perturbed = int(is_perturbed.sum())
    learned_salient[is_perturbed] = np.tile([[3.0, 4.0], [0.0, 2.0]], (n_perturbed // 2, 1))
    scores = leakage(background, salient, background, learned_salient, is_perturbed)
    assert scores["control_salient_norm"] == pytest.approx(0.5 / 3.5)


def test_leakage_errors(latents):
    background, salient, is_perturbed = latents
    with pytest.raises(ValueError, match="is_perturbed must be a 1-D boolean array"):
        leakage(background, salient, background, salient, is_perturbed.astype(int))
    with pytest.raises(ValueError, match="both perturbed"):
        leakage(background, salient, background, salient, np.ones(len(background), bool))
    with pytest.raises(ValueError, match="is_perturbed has 10 rows"):
        leakage(background, salient, background, salient, is_perturbed[:10])
    with pytest.raises(ValueError, match="learned_salient is zero on every perturbed cell"):
        leakage(background, salient, background, np.zeros_like(salient), is_perturbed)


# ------------------------------------------------------------------ seed stability
def test_seed_stability_is_one_for_permuted_rescaled_fits_and_skips_collapsed_axes():
    rng = np.random.default_rng(3)
    first = rng.normal(size=(300, 3))
    second = first[:, [2, 0, 1]] * np.array([-2.0, 0.5, 3.0]) + 1.0
    assert seed_stability(first, second) == pytest.approx(1.0)
    collapsed = np.column_stack([first, np.zeros(300)])
    assert seed_stability(collapsed, second) == pytest.approx(1.0)


def test_seed_stability_hand_computed_and_errors():
    a = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 1.0]])
    b = np.array([[1.0, 1.0], [2.0, 0.0], [3.0, 1.0], [5.0, 0.0]])
    # col 0 vs col 0: corr of (1,2,3,4) and (1,2,3,5); col 1 vs col 1: corr = -1
    r00 = np.corrcoef(a[:, 0], b[:, 0])[0, 1]
    assert seed_stability(a, b) == pytest.approx((abs(r00) + 1.0) / 2)
    with pytest.raises(ValueError, match="Every column of first is constant"):
        seed_stability(np.ones((5, 2)), rng_matrix())
    with pytest.raises(ValueError):
        seed_stability(a, b[:3])


def rng_matrix():
    return np.random.default_rng(0).normal(size=(5, 2))


# ------------------------------------------------------------------ PCA baseline
def test_log_counts_pca_matches_pca_of_log1p_dense_counts_up_to_sign():
    from scipy import sparse
    from sklearn.decomposition import PCA

    from compvi.metrics import log_counts_pca

    counts = np.random.default_rng(0).poisson(3.0, size=(50, 8)).astype(float)
    expected = PCA(n_components=3).fit_transform(np.log1p(counts))
    result = log_counts_pca(sparse.csr_matrix(counts), 3)
    assert result.shape == (50, 3)
    np.testing.assert_allclose(np.abs(result), np.abs(expected), atol=1e-8)
    with pytest.raises(ValueError, match="n_components must be between 1 and"):
        log_counts_pca(counts, 9)


# ------------------------------------------------------------------ factor matching
def test_match_factors_undoes_permutation_and_sign_flip_and_skips_surplus_columns(rng):
    z = rng.normal(size=(500, 3))
    # True column 0 sits in learned column 2, 1 in 3 (flipped), 2 in 0; column 1 is noise.
    learned = np.column_stack([0.5 * z[:, 2], rng.normal(size=500), -2 * z[:, 0], -z[:, 1]])
    np.testing.assert_array_equal(match_factors(z, learned), [2, 3, 0])
    np.testing.assert_array_equal(match_factors(z, learned, method="spearman"), [2, 3, 0])


def test_match_factors_is_the_matching_mcc_averages_over(rng):
    true = np.column_stack([A, B])
    # As in the rectangular mcc test: B must settle for A + B because A goes to true A.
    np.testing.assert_array_equal(match_factors(true, np.column_stack([A + B, A])), [1, 0])
    z = rng.normal(size=(300, 4))
    learned = z @ rng.normal(size=(4, 5)) + rng.normal(size=(300, 5))
    matching = match_factors(z, learned)
    corr = [abs(np.corrcoef(z[:, j], learned[:, m])[0, 1]) for j, m in enumerate(matching)]
    assert mcc(z, learned) == pytest.approx(np.mean(corr))


def test_match_factors_checks_inputs_as_mcc_does():
    with pytest.raises(ValueError, match="at least as many columns as true"):
        match_factors(np.ones((10, 3)), np.ones((10, 2)))
    with pytest.raises(ValueError, match="true has constant columns"):
        match_factors(np.column_stack([A, np.ones(4)]), np.ones((4, 2)))


# ------------------------------------------------------------------ graph recovery
# Four perturbations x three true factors.
TRUE_GRAPH = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1]])


def learned_graph() -> pd.DataFrame:
    """The true graph in learned columns [2, 3, 0] (matching [2, 3, 0]), with mistakes."""
    learned = np.full((4, 4), 0.1)
    learned[:, [2, 3, 0]] = np.where(TRUE_GRAPH == 1, 0.9, 0.1)
    learned[1, 2] = 0.8  # extra: P2 -> true factor 0
    learned[2, 0] = 0.3  # missing: P3 -> true factor 2
    # The surplus column 1 has two edges; 0.5 is not above the threshold.
    learned[:, 1] = [0.7, 0.5, 0.95, 0.2]
    return pd.DataFrame(learned, index=["P1", "P2", "P3", "P4"], columns=["s1", "s2", "s3", "s4"])


def test_shd_counts_missing_and_extra_edges_over_matched_columns():
    result = structural_hamming_distance(TRUE_GRAPH, learned_graph(), [2, 3, 0])
    assert result == {"shd": 2, "missing": 1, "extra": 1, "unmatched_edges": 2}
    # With matched columns as true, the SHD is 0 whatever the surplus column holds.
    exact = learned_graph()
    exact.iloc[1, 2], exact.iloc[2, 0] = 0.1, 0.9
    assert structural_hamming_distance(TRUE_GRAPH, exact, [2, 3, 0])["shd"] == 0


def test_shd_threshold_decides_which_probabilities_are_edges():
    # Above 0.75 only the 0.9s, 0.8 and 0.95 remain: P3 -> factor 2 stays missing, the
    # extra 0.8 stays, and the surplus column keeps only 0.95.
    result = structural_hamming_distance(TRUE_GRAPH, learned_graph(), [2, 3, 0], threshold=0.75)
    assert result == {"shd": 2, "missing": 1, "extra": 1, "unmatched_edges": 1}
    result = structural_hamming_distance(TRUE_GRAPH, learned_graph(), [2, 3, 0], threshold=0.85)
    assert result == {"shd": 1, "missing": 1, "extra": 0, "unmatched_edges": 1}


def test_shd_after_matching_a_permuted_sign_flipped_latent(rng):
    z = rng.normal(size=(500, 3))
    learned_latent = np.column_stack([0.5 * z[:, 2], rng.normal(size=500), -2 * z[:, 0], -z[:, 1]])
    matching = match_factors(z, learned_latent)
    true_frame = pd.DataFrame(TRUE_GRAPH, index=["P1", "P2", "P3", "P4"])
    result = structural_hamming_distance(true_frame, learned_graph().to_numpy(), matching)
    assert result["shd"] == 2 and result["unmatched_edges"] == 2


@pytest.mark.parametrize(
    ("true", "learned", "matching", "kwargs", "match"),
    [
        (TRUE_GRAPH[:3], np.zeros((4, 4)), [0, 1, 2], {}, "got 3 and 4 rows"),
        (TRUE_GRAPH, np.zeros((4, 2)), [0, 1, 2], {}, "at least as many factor columns"),
        (TRUE_GRAPH * 0.5, np.zeros((4, 4)), [0, 1, 2], {}, r"only 0 \(no edge\) and 1"),
        (TRUE_GRAPH, np.full((4, 4), 1.2), [0, 1, 2], {}, r"probabilities in \[0, 1\]"),
        (TRUE_GRAPH, np.full((4, 4), np.nan), [0, 1, 2], {}, "learned_graph contains NaN"),
        (TRUE_GRAPH, np.zeros(4), [0, 1, 2], {}, "learned_graph must be 2-D"),
        (TRUE_GRAPH, np.zeros((4, 4)), [0, 1], {}, "one integer learned-column index"),
        (TRUE_GRAPH, np.zeros((4, 4)), [0.0, 1.0, 2.0], {}, "one integer learned-column"),
        (TRUE_GRAPH, np.zeros((4, 4)), [0, 1, 1], {}, "distinct learned columns"),
        (TRUE_GRAPH, np.zeros((4, 4)), [0, 1, 4], {}, "distinct learned columns in 0, ..., 3"),
        (TRUE_GRAPH, np.zeros((4, 4)), [0, 1, 2], {"threshold": 1.0}, "threshold"),
        (TRUE_GRAPH, np.zeros((4, 4)), [0, 1, 2], {"threshold": 0}, "threshold"),
    ],
)
def test_shd_errors(true, learned, matching, kwargs, match):
    with pytest.raises(ValueError, match=match):
        structural_hamming_distance(true, learned, matching, **kwargs)


def test_shd_rejects_data_frames_with_different_row_order():
    true = pd.DataFrame(TRUE_GRAPH, index=["P1", "P2", "P3", "P4"])
    learned = learned_graph().iloc[::-1]
    with pytest.raises(ValueError, match="different row labels"):
        structural_hamming_distance(true, learned, [2, 3, 0])
    result = structural_hamming_distance(true, learned.loc[true.index], [2, 3, 0])
    assert result["shd"] == 2
