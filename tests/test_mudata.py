"""ComparativeVI.setup_mudata: a MuData with an RNA and a guide modality."""

from __future__ import annotations

import anndata
import mudata
import numpy as np
import pandas as pd
import pytest
import scvi
from scipy import sparse

import compvi
from compvi.data import simulate_screen

MODEL = {"n_background_latent": 4, "n_salient_latent": 3, "n_hidden": 32}
MODALITIES = {"rna_layer": "rna", "condition_key": "rna", "batch_key": "rna"}

# mudata 0.3 announces that MuData.update() will stop pulling modality columns in 0.4.
pytestmark = pytest.mark.filterwarnings("ignore:From 0.4 .update:FutureWarning")


def _screen() -> anndata.AnnData:
    adata = simulate_screen(n_cells=300, n_genes=40, n_batches=2, seed=1)
    adata.layers["counts"] = adata.X.copy()
    return adata


def _guides(rna: anndata.AnnData) -> anndata.AnnData:
    """Guide counts: many reads of the cell's own guide, a few ambient reads of the others."""
    conditions = rna.obs["condition"].cat.categories
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.5, (rna.n_obs, len(conditions))).astype(np.float32)
    own = rna.obs["condition"].cat.codes.to_numpy()
    counts[np.arange(rna.n_obs), own] += rng.poisson(50, rna.n_obs)
    guides = anndata.AnnData(
        sparse.csr_matrix(counts),
        obs=pd.DataFrame(index=rna.obs_names),
        var=pd.DataFrame(index=[f"sg_{c}" for c in conditions]),
    )
    return guides


@pytest.fixture
def mdata() -> mudata.MuData:
    rna = _screen()
    return mudata.MuData({"rna": rna, "guides": _guides(rna)})


def setup(mdata, **kwargs):
    kwargs.setdefault("rna_layer", "counts")
    kwargs.setdefault("condition_key", "condition")
    kwargs.setdefault("control_category", "control")
    kwargs.setdefault("batch_key", "batch")
    kwargs.setdefault("modalities", MODALITIES)
    compvi.ComparativeVI.setup_mudata(mdata, **kwargs)


def _train(model):
    model.train(max_epochs=2, batch_size=64, enable_progress_bar=False)
    return model


def test_setup_mudata_trains_and_embeds(mdata):
    setup(mdata)
    model = _train(compvi.ComparativeVI(mdata, **MODEL))
    assert model.summary_stats.n_vars == 40  # the RNA modality only, not the guides
    assert model.summary_stats.n_batch == 2
    assert model.conditions == ["control", "P1", "P2", "P3"]
    salient = model.get_latent_representation()
    background = model.get_latent_representation(representation_kind="background")
    assert salient.shape == (300, 3) and background.shape == (300, 4)
    assert np.isfinite(salient).all() and np.isfinite(background).all()
    perturbed = model._is_perturbed(model.adata_manager)
    np.testing.assert_array_equal(perturbed, mdata["rna"].obs["condition"] != "control")
    # A copy goes through scvi-tools' transfer of the registration.
    np.testing.assert_allclose(model.get_latent_representation(mdata.copy()), salient, atol=1e-6)
    other = mdata.copy()
    other["rna"].obs["condition"] = (
        other["rna"].obs["condition"].cat.rename_categories({"P1": "P9"})
    )
    with pytest.raises(ValueError, match=r"mdata\.mod\['rna'\]\.obs\['condition'\] has cond"):
        model.get_latent_representation(other)
    reordered = mudata.MuData({"rna": mdata["rna"][:, ::-1].copy(), "guides": mdata["guides"]})
    with pytest.raises(ValueError, match=r"mdata\.mod\['rna'\] has the model's genes in another"):
        model.get_latent_representation(reordered)
    with pytest.raises(ValueError, match="set up with setup_mudata; pass a MuData"):
        model.get_latent_representation(mdata["rna"].copy())


def test_mudata_model_matches_the_anndata_model(mdata):
    scvi.settings.seed = 0
    setup(mdata)
    from_mudata = _train(compvi.ComparativeVI(mdata, **MODEL))

    scvi.settings.seed = 0
    rna = _screen()
    compvi.ComparativeVI.setup_anndata(
        rna,
        condition_key="condition",
        control_category="control",
        layer="counts",
        batch_key="batch",
    )
    from_anndata = _train(compvi.ComparativeVI(rna, **MODEL))

    for kind in ("salient", "background"):
        np.testing.assert_allclose(
            from_mudata.get_latent_representation(representation_kind=kind),
            from_anndata.get_latent_representation(representation_kind=kind),
            atol=1e-5,
        )


def test_obs_keys_without_a_modality_are_read_from_mdata_obs(mdata):
    mdata.obs["perturbation"] = mdata["rna"].obs["condition"].astype(str).to_numpy()
    setup(mdata, condition_key="perturbation", batch_key=None, modalities={"rna_layer": "rna"})
    model = compvi.ComparativeVI(mdata, **MODEL)
    perturbed = model._is_perturbed(model.adata_manager)
    np.testing.assert_array_equal(perturbed, mdata.obs["perturbation"] != "control")


def _snapshot(mdata):
    return (
        {name: list(mod.obs.columns) for name, mod in mdata.mod.items()},
        list(mdata.obs.columns),
        {name: set(mod.uns) for name, mod in mdata.mod.items()},
        set(mdata.uns),
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"modalities": {"condition_key": "rna"}}, ValueError, "modalities must name.*rna_layer"),
        ({"modalities": None}, ValueError, "modalities must name.*rna_layer"),
        (
            {"modalities": {**MODALITIES, "batch_key": "atac"}},
            ValueError,
            r"modalities\['batch_key'\]='atac' is not a modality of mdata",
        ),
        (
            {"modalities": {**MODALITIES, "guide_key": "guides"}},
            ValueError,
            "Extraneous modality",
        ),
        (
            {"condition_key": "perturbation"},
            KeyError,
            r"condition_key='perturbation' is not a column of mdata\.mod\['rna'\]\.obs",
        ),
        (
            {"condition_key": "condition", "modalities": {"rna_layer": "rna"}},
            KeyError,
            r"condition_key='condition' is not a column of mdata\.obs",
        ),
        (
            {"control_category": "NT"},
            ValueError,
            r"control_category \['NT'\] not found in mdata\.mod\['rna'\]\.obs\['condition'\]",
        ),
        ({"batch_key": "lane"}, KeyError, r"batch_key='lane' is not a column of mdata\.mod"),
        (
            {"rna_layer": "raw"},
            KeyError,
            r"rna_layer='raw' is not in mdata\.mod\['rna'\]\.layers",
        ),
    ],
)
def test_bad_setup_raises_and_leaves_mdata_untouched(mdata, kwargs, error, match):
    before = _snapshot(mdata)
    with pytest.raises(error, match=match):
        setup(mdata, **kwargs)
    assert _snapshot(mdata) == before


@pytest.mark.parametrize(
    ("value", "match"),
    [(np.nan, "contains NaN"), (-1.0, "contains negative")],
)
def test_bad_counts_raise_naming_the_modality_layer(mdata, value, match):
    counts = mdata["rna"].layers["counts"].toarray()
    counts[5, 3] = value
    mdata["rna"].layers["counts"] = counts
    before = _snapshot(mdata)
    with pytest.raises(ValueError, match=rf"mdata\.mod\['rna'\]\.layers\['counts'\] {match}"):
        setup(mdata)
    assert _snapshot(mdata) == before


def test_modality_without_every_cell_raises(mdata):
    subset = mudata.MuData({"rna": mdata["rna"][:250].copy(), "guides": mdata["guides"].copy()})
    with pytest.raises(ValueError, match=r"mdata\.mod\['rna'\] \(rna_layer\) must hold every"):
        setup(subset)


def test_log_normalized_rna_is_refused_naming_the_modality(mdata):
    mdata["rna"].layers["counts"] = mdata["rna"].layers["counts"].log1p()
    with pytest.warns(UserWarning, match="count data"):
        setup(mdata)
    with pytest.raises(
        ValueError,
        match=r"mdata\.mod\['rna'\]\.layers\['counts'\] holds non-integer.*setup_mudata",
    ):
        compvi.ComparativeVI(mdata, **MODEL)


def test_save_load_round_trip(mdata, tmp_path):
    setup(mdata)
    model = _train(compvi.ComparativeVI(mdata, **MODEL))
    expected = model.get_latent_representation()
    model.save(tmp_path / "model", save_anndata=True)
    assert (tmp_path / "model" / "mdata.h5mu").exists()

    loaded = compvi.ComparativeVI.load(tmp_path / "model", adata=mdata)
    np.testing.assert_allclose(loaded.get_latent_representation(), expected, atol=1e-6)
    with_saved_data = compvi.ComparativeVI.load(tmp_path / "model")
    assert isinstance(with_saved_data.adata, mudata.MuData)
    np.testing.assert_allclose(with_saved_data.get_latent_representation(), expected, atol=1e-6)

    with pytest.raises(ValueError, match="trained on a MuData"):
        compvi.ComparativeVI.load(tmp_path / "model", adata=mdata["rna"].copy())
    other = mudata.MuData({"rna": mdata["rna"][:, ::-1].copy(), "guides": mdata["guides"]})
    with pytest.raises(ValueError, match=r"mdata\.mod\['rna'\] has the model's genes in another"):
        compvi.ComparativeVI.load(tmp_path / "model", adata=other)


def test_expression_and_de_on_a_mudata_model(mdata):
    setup(mdata)
    model = _train(compvi.ComparativeVI(mdata, **MODEL))
    expression = model.get_normalized_expression()
    assert expression.shape == (300, 40)
    assert list(expression.columns) == list(mdata["rna"].var_names)
    for reference in ("counterfactual", "control"):
        de = model.differential_expression(
            group1="P1", reference=reference, n_samples_overall=50, all_stats=True, silent=True
        )
        assert set(de.index) == set(mdata["rna"].var_names)
        assert np.isfinite(de["lfc_mean"]).all() and np.isfinite(de["raw_mean1"]).all()
    scores = model.get_perturbation_scores()
    assert list(scores.cells.index) == list(mdata.obs_names)


def test_a_batch_that_separates_the_groups_is_warned_about_in_its_modality(mdata):
    rna = mdata["rna"]
    control = (rna.obs["condition"] == "control").to_numpy()
    rna.obs["sample"] = pd.Categorical(np.where(control, "s_ctrl", "s_pert"))
    with pytest.warns(UserWarning, match=r"\['sample'\] \(batch_key\) separates control"):
        setup(mdata, batch_key="sample")
