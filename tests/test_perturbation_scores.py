from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
from conftest import fit
from sklearn.metrics import roc_auc_score

from compvi.data import simulate_screen
from compvi.model._responders import responder_probability, score_perturbations


@pytest.mark.parametrize("fraction", [0.3, 0.7, 1.0])
def test_responder_mixture_recovers_the_fraction_and_the_cells(fraction):
    rng = np.random.default_rng(0)
    control = rng.normal(1.0, 2.0, 2000)
    n_responders = int(fraction * 1000)
    scores = np.r_[rng.normal(1.0, 2.0, 1000 - n_responders), rng.normal(9.0, 2.0, n_responders)]
    probability, fitted = responder_probability(scores, control)
    assert probability.shape == scores.shape
    assert fitted.fraction == pytest.approx(fraction, abs=0.03)
    # The responder component sits at +4 control SDs with the controls' spread.
    assert fitted.mean == pytest.approx(4.0, abs=0.15)
    assert fitted.sd == pytest.approx(1.0, abs=0.1)
    assert fitted.bic_gain > 100
    assert (probability[1000 - n_responders :] > 0.5).mean() > 0.95
    if n_responders < 1000:
        assert (probability[: 1000 - n_responders] > 0.5).mean() < 0.1


def test_responder_mixture_finds_no_responders_where_there_is_no_effect():
    rng = np.random.default_rng(1)
    probability, fitted = responder_probability(rng.normal(0, 1, 800), rng.normal(0, 1, 2000))
    np.testing.assert_array_equal(probability, 0.0)
    assert fitted.fraction == 0.0 and fitted.bic_gain <= 0


def test_responder_mixture_errors():
    with pytest.raises(ValueError, match="control_scores needs at least two distinct values"):
        responder_probability(np.ones(5), np.ones(10))
    with pytest.raises(ValueError, match="scores is empty"):
        responder_probability(np.array([]), np.arange(10.0))


def test_score_perturbations_standardizes_along_each_perturbations_direction():
    rng = np.random.default_rng(2)
    control = rng.normal(0, 1, (500, 3))
    a = rng.normal(0, 1, (300, 3)) + np.array([6.0, 0, 0])
    b = rng.normal(0, 1, (300, 3)) + np.array([0, 0, -6.0])
    salient = np.vstack([control, a, b])
    labels = np.array(["ctrl"] * 500 + ["A"] * 300 + ["B"] * 300)
    cells, summary = score_perturbations(salient, labels, labels == "ctrl")
    assert cells["perturbation_score"].iloc[:500].isna().all()
    assert list(summary.index) == ["A", "B"]
    # Cross-fitted axes are close to the true shift direction, so scores are the first
    # coordinate in control standard deviations.
    expected = (a[:, 0] - control[:, 0].mean()) / control[:, 0].std()
    np.testing.assert_allclose(cells["perturbation_score"].iloc[500:800], expected, atol=0.4)
    assert summary.loc["A", "effect_size"] == pytest.approx(expected.mean(), abs=0.1)
    assert summary.loc["A", "effect_size"] == cells["perturbation_score"].iloc[500:800].mean()
    assert summary.loc["B", "salient_shift"] == pytest.approx(6.0, abs=0.2)
    assert summary.loc["A", "n_cells"] == 300
    assert summary["responder_fraction"].min() > 0.95
    with pytest.raises(ValueError, match="NaN or infinite"):
        score_perturbations(np.full((4, 2), np.nan), labels[:4], labels[:4] == "ctrl")


@pytest.fixture(scope="module")
def screen_with_escapers():
    """A screen where 80 control cells are labelled P2 (escapers) and 80 labelled NULL."""
    scvi.settings.seed = 0
    adata = simulate_screen(n_cells=900, n_genes=60, seed=4)
    condition = adata.obs["condition"].astype(str).to_numpy()
    controls = np.flatnonzero(condition == "control")
    rng = np.random.default_rng(0)
    planted = rng.choice(controls, 160, replace=False)
    condition[planted[:80]] = "P2"
    condition[planted[80:]] = "NULL"
    adata.obs["condition"] = pd.Categorical(condition)
    adata.obs["planted"] = np.isin(np.arange(adata.n_obs), planted[:80])
    # About 1,000 steps: the constraints' multipliers need a few hundred to settle.
    return fit(adata, max_epochs=60, batch_size=32), adata


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known limitation of the leakage bound on a 900-cell screen: the penalty pulls "
    "the training controls' salient codes tighter than the network generalizes, so the "
    "planted controls labelled P2 spread more than the controls and 29% are called "
    "escapers (wanted > 50%), while P2's real cells are told from them at AUC 0.95 and "
    "98% are responders. Without the leakage bound 89% are called escapers.",
)
def test_escapers_and_null_perturbations_are_told_apart(screen_with_escapers):
    model, adata = screen_with_escapers
    scores = model.get_perturbation_scores()
    cells, summary = scores.cells, scores.perturbations
    planted = adata.obs["planted"].to_numpy()
    true_p2 = (adata.obs["condition"] == "P2").to_numpy() & ~planted
    # Simulated P2 cells spread widely (some lie near the controls), so the two groups
    # overlap; the planted controls should still rank well below the real P2 cells.
    p2 = planted | true_p2
    probability = cells.loc[p2, "responder_probability"]
    assert roc_auc_score(true_p2[p2], probability) > 0.8
    assert (cells.loc[planted, "cell_class"] == "escaper").mean() > 0.5
    assert (cells.loc[true_p2, "cell_class"] == "responder").mean() > 0.8
    # A small model on 900 cells overfits a little: control cells it trained as perturbed
    # (NULL) spread slightly more than the controls. Far from P2's and P3's responders.
    assert summary.loc["NULL", "responder_fraction"] < 0.25
    assert summary.loc["NULL", "effect_size"] < 0.2 * summary.loc["P3", "effect_size"]
    assert summary.index[-1] == "NULL"


def test_perturbation_scores_tables(trained):
    model, adata = trained
    scores = model.get_perturbation_scores(n_top_genes=3)
    cells, summary = scores.cells, scores.perturbations
    assert list(cells.index) == list(adata.obs_names)
    np.testing.assert_allclose(
        cells["salient_norm"],
        np.linalg.norm(model.get_latent_representation(), axis=1),
        rtol=1e-5,
    )
    control = (adata.obs["condition"] == "control").to_numpy()
    assert (cells.loc[control, "cell_class"] == "control").all()
    assert cells.loc[control, "responder_probability"].isna().all()
    responders = cells["responder_probability"] >= 0.5
    np.testing.assert_array_equal(
        cells.loc[~control, "cell_class"] == "responder", responders[~control]
    )
    assert (np.diff(summary["effect_size"].to_numpy()) <= 0).all()
    for label, row in summary.iterrows():
        members = (adata.obs["condition"] == label).to_numpy()
        assert row["n_cells"] == members.sum()
        assert row["n_responders"] == responders[members].sum()
        genes = [item.split(" ")[0] for item in row["top_genes"].split(", ")]
        assert len(genes) == 3 and set(genes) <= set(adata.var_names)
    members = np.flatnonzero(adata.obs["condition"] == "P1")
    full, background = (
        model.get_normalized_expression(indices=members, kind=kind, library_size=1e4).mean(0)
        for kind in ("full", "background")
    )
    lfc = np.log2(full + 1) - np.log2(background + 1)
    expected = lfc.abs().sort_values(ascending=False).index[:3]
    assert summary.loc["P1", "top_genes"] == ", ".join(f"{g} ({lfc[g]:+.2f})" for g in expected)
    # No responder component sits 1,000 control SDs above the controls.
    strict = model.get_perturbation_scores(min_effect=1000.0, n_top_genes=0)
    assert (strict.perturbations["n_responders"] == 0).all()
    assert (strict.cells.loc[~control, "cell_class"] == "escaper").all()
    with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\)"):
        model.get_perturbation_scores(threshold=1.0)


def test_add_results_writes_every_documented_key_and_survives_h5ad(trained, tmp_path):
    model, adata = trained
    copy = adata.copy()
    model.add_results(copy, key_added="cvi")
    scores = model.get_perturbation_scores()
    # float32 model outputs: compared at float32 tolerances.
    np.testing.assert_allclose(
        copy.obsm["X_cvi_salient"], model.get_latent_representation(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        copy.obsm["X_cvi_background"],
        model.get_latent_representation(representation_kind="background"),
        rtol=1e-5,
        atol=1e-6,
    )
    for column in ("salient_norm", "perturbation_score", "responder_probability"):
        np.testing.assert_allclose(
            copy.obs[f"cvi_{column}"], scores.cells[column], rtol=1e-5, atol=1e-6
        )
    assert list(copy.obs["cvi_class"].cat.categories) == [
        "control",
        "responder",
        "escaper",
        "unscored",
    ]
    pd.testing.assert_frame_equal(copy.uns["cvi"]["perturbations"], scores.perturbations)
    path = tmp_path / "scored.h5ad"
    copy.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.uns["cvi"]["params"]["threshold"] == 0.5
    assert list(back.uns["cvi"]["perturbations"].index) == list(scores.perturbations.index)
    assert "X_compvi_salient" not in adata.obsm
