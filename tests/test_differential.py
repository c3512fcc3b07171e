from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scvi

from compvi.model._differential import paired_change


def test_paired_change_matches_a_hand_computation():
    full = np.array([[4.0, 1.0], [8.0, 1.0], [2.0, 1.0], [4.0, 3.0]])
    background = np.array([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    stats = paired_change(full, background, mode="change", delta=0.5, pseudocounts=0.0)
    # Gene 0: LFCs 1, 2, 0, 0 -> P(LFC >= 0.5) = 0.5; gene 1: 0, 0, 0, log2(3).
    np.testing.assert_allclose(stats["proba_de"], [0.5, 0.25])
    np.testing.assert_allclose(stats["proba_not_de"], [0.5, 0.75])
    np.testing.assert_allclose(stats["bayes_factor"], [0.0, np.log(0.25 / 0.75)], atol=1e-6)
    np.testing.assert_allclose(stats["lfc_mean"], [0.75, np.log2(3) / 4], rtol=1e-3)
    np.testing.assert_allclose(stats["lfc_median"], [0.5, 0.0], atol=1e-3)
    np.testing.assert_allclose(stats["scale1"], [4.5, 1.5])
    np.testing.assert_allclose(stats["scale2"], [2.5, 1.0])
    assert stats["delta"] == 0.5
    down = paired_change(background, full, mode="change", delta=0.5, pseudocounts=0.0)
    np.testing.assert_allclose(down["proba_de"], stats["proba_de"])
    np.testing.assert_allclose(down["lfc_mean"], -stats["lfc_mean"], rtol=1e-6)
    vanilla = paired_change(full, background, mode="vanilla", delta=None, pseudocounts=0.0)
    np.testing.assert_allclose(vanilla["proba_m1"], [0.5, 0.25])
    np.testing.assert_allclose(vanilla["proba_m2"], [0.5, 0.75])


def test_counterfactual_de_of_control_cells_finds_no_change(trained):
    model, _ = trained
    table = model.differential_expression(group1="control", silent=True, n_samples_overall=200)
    np.testing.assert_allclose(table["lfc_mean"], 0.0, atol=1e-5)  # float32 decodes
    np.testing.assert_array_equal(table["proba_de"], 0.0)
    assert not table["is_de_fdr_0.05"].any()
    assert (table["comparison"] == "control vs counterfactual").all()


def test_counterfactual_de_measures_the_decoded_salient_change(trained):
    model, adata = trained
    table = model.differential_expression(silent=True, n_samples_overall=3000)
    assert set(table["group1"]) == {"P1", "P2", "P3"}
    assert len(table) == 3 * adata.n_vars
    p1 = table[table["group1"] == "P1"]
    assert p1.index.is_unique and set(p1.index) == set(adata.var_names)
    assert (np.diff(p1["proba_de"].to_numpy()) <= 0).all()
    cells = (adata.obs["condition"] == "P1").to_numpy()
    full = model.get_normalized_expression(indices=np.flatnonzero(cells), n_samples=20)
    background = model.get_normalized_expression(
        indices=np.flatnonzero(cells), n_samples=20, kind="background"
    )
    np.testing.assert_allclose(p1["scale1"], full.mean(0)[p1.index], rtol=0.15)
    np.testing.assert_allclose(p1["scale2"], background.mean(0)[p1.index], rtol=0.15)
    expected = np.log2(full.mean(0)) - np.log2(background.mean(0))
    assert np.corrcoef(p1["lfc_mean"], expected[p1.index])[0, 1] > 0.8
    raw_mean = np.asarray(adata.X[cells].mean(0)).ravel()
    genes = adata.var_names.get_indexer(p1.index)
    np.testing.assert_allclose(p1["raw_mean1"], raw_mean[genes], rtol=1e-5)


def test_control_reference_uses_all_controls_and_tracks_the_raw_fold_change(trained):
    model, adata = trained
    table = model.differential_expression(
        reference="control", group1="P1", silent=True, n_samples_overall=3000
    )
    assert (table["comparison"] == "P1 vs control").all()
    control = (adata.obs["condition"] == "control").to_numpy()
    raw_control = np.asarray(adata.X[control].mean(0)).ravel()
    np.testing.assert_allclose(
        table["raw_mean2"], raw_control[adata.var_names.get_indexer(table.index)], rtol=1e-5
    )
    raw_lfc = np.log2(table["raw_normalized_mean1"] + 1) - np.log2(
        table["raw_normalized_mean2"] + 1
    )
    assert np.corrcoef(table["lfc_mean"], raw_lfc)[0, 1] > 0.6
    versus_p2 = model.differential_expression(
        reference="control", group1="P1", group2="P2", silent=True, n_samples_overall=500
    )
    assert (versus_p2["group2"] == "P2").all()


def test_de_is_reproducible_under_the_scvi_seed(trained):
    model, _ = trained
    scvi.settings.seed = 3
    first = model.differential_expression(group1="P2", silent=True, n_samples_overall=300)
    scvi.settings.seed = 3
    second = model.differential_expression(group1="P2", silent=True, n_samples_overall=300)
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"reference": "rest"}, ValueError, "reference='rest' is not one of"),
        ({"mode": "bayes"}, ValueError, "mode='bayes' is not one of"),
        ({"group2": "control"}, ValueError, "group2 only apply to reference='control'"),
        ({"use_permutation": True}, ValueError, "use_permutation only apply"),
        ({"groupby": "guide"}, KeyError, "groupby='guide' is not a column"),
        ({"group1": "P9"}, ValueError, "'P9' has no cells in adata.obs"),
        ({"group1": []}, ValueError, "group1 names no group"),
        ({"reference": "control", "group2": "P9"}, ValueError, "'P9' has no cells"),
    ],
)
def test_de_argument_errors(trained, kwargs, error, match):
    model, _ = trained
    with pytest.raises(error, match=match):
        model.differential_expression(silent=True, **kwargs)
