"""Hostile and edge-case input after setup (issue 17): training options, queries, load.

Every case ends in an error naming the argument or field and the fix, or in a documented
result; a refused call leaves the user's AnnData as it was. Each test is a row of
docs/reliability.md.
"""

from __future__ import annotations

import warnings

import anndata
import numpy as np
import pandas as pd
import pytest
import scvi
from scipy import sparse

import compvi
from compvi.data import simulate_screen
from compvi.model._responders import score_perturbations


def assert_untouched(adata, before):
    """The refused call wrote nothing: same obs, obsm and uns keys, same counts."""
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    assert set(adata.uns) == set(before.uns)
    assert set(adata.obsm) == set(before.obsm)
    x, x0 = adata.X, before.X
    if sparse.issparse(x):
        x, x0 = x.toarray(), x0.toarray()
    np.testing.assert_array_equal(x, x0)


def setup(adata, **kwargs):
    kwargs.setdefault("condition_key", "condition")
    kwargs.setdefault("control_category", "control")
    compvi.ComparativeVI.setup_anndata(adata, **kwargs)


def small_model(adata, **kwargs):
    return compvi.ComparativeVI(
        adata, n_background_latent=2, n_salient_latent=2, n_hidden=16, **kwargs
    )


def _raw_screen(seed: int = 5):
    adata = simulate_screen(n_cells=160, n_genes=15, n_batches=2, seed=seed)
    adata.obs = adata.obs[["condition", "batch"]].copy()
    adata.obs["condition"] = adata.obs["condition"].astype(str)
    adata.X = adata.X.toarray()
    return adata


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for one epoch, its pristine AnnData (never registered) and a save."""
    scvi.settings.seed = 0
    raw = _raw_screen()
    adata = raw.copy()
    setup(adata, batch_key="batch")
    model = small_model(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    path = tmp_path_factory.mktemp("saved") / "model"
    model.save(path, save_anndata=False)
    return model, raw, path


@pytest.fixture
def query(trained):
    """A fresh copy of the training cells, never given to the model."""
    return trained[1].copy()


# ------------------------------------------------------------- train arguments
@pytest.mark.parametrize("max_epochs", [-1, 0, 1.5, "10", True])
def test_train_refuses_max_epochs_that_are_not_positive_integers(screen, max_epochs):
    # Lightning reads -1 as "no limit" (training never ends); 0 marks an untrained model as
    # trained; 1.5 used to fail with an empty AssertionError.
    setup(screen)
    model = small_model(screen)
    with pytest.raises(ValueError, match=r"max_epochs must be None or a positive integer, got"):
        model.train(max_epochs=max_epochs, enable_progress_bar=False)
    assert not model.is_trained


def test_train_refuses_early_stopping_without_validation_cells(screen):
    setup(screen)
    model = small_model(screen)
    with pytest.raises(
        ValueError, match=r"early_stopping=True needs validation cells.*train_size < 1"
    ):
        model.train(max_epochs=1, train_size=1.0, early_stopping=True)
    with pytest.raises(ValueError, match=r"train_size must be a number in \(0, 1\], got 1.5"):
        model.train(max_epochs=1, train_size=1.5)
    assert not model.is_trained
    # numpy integers are integers
    model.train(max_epochs=np.int64(1), batch_size=np.int64(64), enable_progress_bar=False)
    assert model.is_trained


# ------------------------------------------------------------------- setup
def test_setup_refuses_fewer_than_two_control_cells(screen):
    screen.obs["condition"] = screen.obs["condition"].astype(str)
    control = np.flatnonzero(screen.obs["condition"] == "control")
    screen = screen[np.setdiff1d(np.arange(screen.n_obs), control[1:])].copy()
    before = screen.copy()
    with pytest.raises(ValueError, match=r"has 1 control cell .*at least 2 control cells"):
        setup(screen)
    assert_untouched(screen, before)


def test_setup_refuses_duplicated_var_names(screen):
    screen.var_names = ["g0"] * 2 + list(screen.var_names[2:])
    before = screen.copy()
    with pytest.raises(ValueError, match=r"adata\.var_names has 1 duplicated.*var_names_make"):
        setup(screen)
    assert_untouched(screen, before)


@pytest.mark.parametrize(
    "keys",
    [
        {"batch_key": "condition"},
        {"categorical_covariate_keys": ["donor", "condition"]},
    ],
)
def test_setup_refuses_the_condition_as_batch_or_covariate(screen, keys):
    before = screen.copy()
    with pytest.raises(ValueError, match=r"condition_key='condition' is also in"):
        setup(screen, **keys)
    assert_untouched(screen, before)


def test_integer_control_category_registers_and_other_types_are_refused(screen):
    codes = {"control": 0, "P1": 1, "P2": 2, "P3": 3}
    screen.obs["condition"] = screen.obs["condition"].astype(str).map(codes).astype(int)
    before = screen.copy()
    with pytest.raises(ValueError, match=r"control_category must be a label .* got None"):
        setup(screen, control_category=None)
    assert_untouched(screen, before)
    setup(screen, control_category=0)  # used to raise "'int' object is not iterable"
    model = small_model(screen)
    assert model.control_categories == ["0"]
    assert model._is_perturbed(model.adata_manager).sum() == (before.obs["condition"] != 0).sum()


def test_labels_that_differ_from_the_control_only_by_case_or_spaces_warn(screen):
    screen.obs["condition"] = screen.obs["condition"].astype(str)
    screen.obs.iloc[:3, screen.obs.columns.get_loc("condition")] = ["control ", "Control", "P1"]
    with pytest.warns(UserWarning, match=r"'Control' \(like 'control'\), 'control ' \(like"):
        setup(screen)


# ------------------------------------------------------------------ indices
@pytest.mark.parametrize(
    ("indices", "message"),
    [
        (np.arange(10) < 5, r"boolean mask of length 10, but adata has 160 cells"),
        ([-1], r"negative positions \(e.g. -1\); pass positions from 0 to 159"),
        ([0, 160], r"positions up to 160, beyond the last cell \(159"),
        ([0.0, 1.5], r"integer cell positions or be a boolean mask"),
        (["cell_0"], r"adata\.obs_names\.get_indexer"),
        (np.zeros((2, 2), dtype=int), r"1-D list of cell positions"),
        ([], r"selects no cells"),
    ],
)
def test_bad_indices_are_refused(trained, indices, message):
    model = trained[0]
    with pytest.raises(ValueError, match=message):
        model.get_latent_representation(indices=indices)
    with pytest.raises(ValueError, match=message):
        model.get_normalized_expression(indices=indices)
    with pytest.raises(ValueError, match=message):
        model.get_salient_effect(indices=indices)


def test_a_boolean_mask_selects_the_cells_it_marks(trained):
    model = trained[0]
    mask = np.zeros(model.adata.n_obs, dtype=bool)
    mask[[3, 7, 50]] = True
    np.testing.assert_array_equal(
        model.get_latent_representation(indices=mask),
        model.get_latent_representation(indices=np.int64([3, 7, 50])),
    )
    expression = model.get_normalized_expression(indices=mask)
    assert list(expression.index) == list(model.adata.obs_names[[3, 7, 50]])


# ------------------------------------------------------------------ queries
def _log_normalized(adata):
    adata.X = np.log1p(np.asarray(adata.X, dtype=float) / 10)


def _nan_count(adata):
    adata.X = np.asarray(adata.X, dtype=float)
    adata.X[0, 0] = np.nan


def _negative_count(adata):
    adata.X = np.asarray(adata.X, dtype=float)
    adata.X[0, 0] = -1


def _zero_count_cell(adata):
    adata.X = np.asarray(adata.X).copy()
    adata.X[5] = 0


def _none_batch(adata):
    adata.obs["batch"] = adata.obs["batch"].astype(object)
    adata.obs.iloc[0, adata.obs.columns.get_loc("batch")] = None


def _unseen_batch(adata):
    adata.obs["batch"] = adata.obs["batch"].astype(str)
    adata.obs.iloc[0, adata.obs.columns.get_loc("batch")] = "batch_9"


def _duplicated_obs_names(adata):
    adata.obs_names = [f"cell_{i // 2}" for i in range(adata.n_obs)]


def _new_perturbation(adata):
    adata.obs.iloc[0, adata.obs.columns.get_loc("condition")] = "P_new"


CORRUPTIONS = {
    "log-normalized": (_log_normalized, r"adata\.X holds non-integer values .*log-normalized"),
    "NaN count": (_nan_count, r"adata\.X contains NaN"),
    "negative count": (_negative_count, r"adata\.X contains negative values"),
    "zero-count cell": (_zero_count_cell, r"1 cells have zero total counts.*filter_cells"),
    "None batch": (_none_batch, r"adata\.obs\['batch'\] \(batch_key\) has 1 missing values"),
    "unseen batch": (_unseen_batch, r"\(batch_key\) has categories the model was not trained"),
    "duplicated obs_names": (_duplicated_obs_names, r"80 duplicated cell names.*make_unique"),
    "new perturbation": (_new_perturbation, r"conditions the model was not trained on.*P_new"),
}
QUERIES = {
    "get_latent_representation": lambda m, a: m.get_latent_representation(a),
    "get_normalized_expression": lambda m, a: m.get_normalized_expression(a),
    "get_perturbation_scores": lambda m, a: m.get_perturbation_scores(a, n_top_genes=0),
    "differential_expression": lambda m, a: m.differential_expression(
        a, n_samples_overall=10, silent=True
    ),
    "add_results": lambda m, a: m.add_results(a, n_top_genes=0),
}


@pytest.mark.parametrize("query_name", sorted(QUERIES))
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_queries_refuse_what_setup_refuses_and_leave_adata_untouched(
    trained, query, corruption, query_name
):
    model = trained[0]
    corrupt, message = CORRUPTIONS[corruption]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata warns about duplicated names
        corrupt(query)
    before = query.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=message) as refused:
            QUERIES[query_name](model, query)
    assert_untouched(query, before)
    # The same words as setup_anndata's, where setup refuses the same AnnData.
    if corruption not in ("log-normalized", "unseen batch", "new perturbation"):
        with pytest.raises(ValueError) as at_setup:
            setup(before.copy(), batch_key="batch")
        assert str(at_setup.value) == str(refused.value)


def test_a_relabelled_condition_column_is_refused(trained, query):
    model = trained[0]
    model.get_latent_representation(query)  # registers the query
    query.obs["condition"] = query.obs["condition"].replace({"P1": "P2"})
    before = query.copy()
    with pytest.raises(ValueError, match=r"condition'\] changed after the AnnData was regist"):
        model.differential_expression(query, n_samples_overall=10, silent=True)
    with pytest.raises(ValueError, match=r"registered 'P1', now 'P2'.*pass adata\.copy\(\)"):
        model.get_perturbation_scores(query)
    assert_untouched(query, before)
    # The fix the message names: a copy is registered afresh, with the new labels.
    scores = model.get_perturbation_scores(query.copy(), n_top_genes=0)
    assert "P1" not in set(scores.cells["condition"])
    assert (scores.cells["condition"] == "P2").sum() == (query.obs["condition"] == "P2").sum()


def test_scores_need_two_controls_and_a_perturbation(trained, query):
    model = trained[0]
    is_control = (query.obs["condition"] == "control").to_numpy()
    one_control = query[~is_control | (np.cumsum(is_control) == 1)].copy()
    only_controls = query[is_control].copy()
    for adata, message in [
        (one_control, r"adata has 1 control cells; perturbation scores need at least 2"),
        (only_controls, r"control cells only: there is no perturbation to score"),
    ]:
        before = adata.copy()
        with pytest.raises(ValueError, match=message):
            model.get_perturbation_scores(adata)
        with pytest.raises(ValueError, match=message):
            model.add_results(adata)
        # Refused after scvi-tools registered adata: the registration is undone too.
        assert_untouched(adata, before)


def test_de_without_controls_raises_naming_the_fix(trained, query):
    model = trained[0]
    perturbed = query[(query.obs["condition"] != "control").to_numpy()].copy()
    for reference, fix in [
        ("counterfactual", r"pass all_stats=False and a pseudocounts value"),
        ("control", r"pass group2"),
    ]:
        before = perturbed.copy()
        with pytest.raises(ValueError, match=rf"adata has 0 control cells.*{fix}"):
            model.differential_expression(
                perturbed, reference=reference, n_samples_overall=10, silent=True
            )
        assert_untouched(perturbed, before)
    # The fixes the message names work.
    table = model.differential_expression(
        perturbed, all_stats=False, pseudocounts=1e-4, n_samples_overall=10, silent=True
    )
    assert set(table["group1"]) == {"P1", "P2", "P3"}
    table = model.differential_expression(
        perturbed, reference="control", group1="P1", group2="P2", n_samples_overall=10
    )
    assert set(table["comparison"]) == {"P1 vs P2"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delta": -1.0}, r"delta must be None or a finite number > 0, got -1.0"),
        ({"delta": 0}, r"delta must be None or a finite number > 0, got 0"),
        ({"fdr_target": 2}, r"fdr_target must be a number in \(0, 1\), got 2"),
        ({"fdr_target": np.nan}, r"fdr_target must be a number in \(0, 1\), got nan"),
        ({"pseudocounts": -1}, r"pseudocounts must be None or a finite number >= 0, got -1"),
        ({"n_samples_overall": 0}, r"n_samples_overall must be a positive integer, got 0"),
        ({"n_samples_overall": 1.5}, r"n_samples_overall must be a positive integer, got 1.5"),
        ({"batch_correction": True}, r"batch_correction only apply to reference='control'"),
        ({"batch_size": 0}, r"batch_size must be None or a positive integer, got 0"),
    ],
)
def test_de_refuses_meaningless_options(trained, options, message):
    with pytest.raises(ValueError, match=message):
        trained[0].differential_expression(silent=True, **options)


def test_de_groupby_with_nan_is_refused_and_numeric_groups_work(trained, query):
    model = trained[0]
    query.obs["cluster"] = np.arange(query.n_obs) % 3
    table = model.differential_expression(
        query,
        groupby="cluster",
        group1=1,
        group2=np.int64(0),
        reference="control",
        n_samples_overall=10,
        silent=True,
    )
    assert set(table["comparison"]) == {"1 vs 0"}
    query.obs["cluster"] = query.obs["cluster"].astype(float)
    query.obs.iloc[0, query.obs.columns.get_loc("cluster")] = np.nan
    with pytest.raises(ValueError, match=r"adata\.obs\['cluster'\] \(groupby\) has 1 missing"):
        model.differential_expression(
            query, groupby="cluster", group1=1.0, reference="control", silent=True
        )


# ------------------------------------------------------------------- scores
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_effect": np.nan}, r"min_effect must be a finite number >= 0, got nan"),
        ({"min_effect": -1}, r"min_effect must be a finite number >= 0, got -1"),
        ({"threshold": 1}, r"threshold must be a number in \(0, 1\), got 1"),
        ({"n_top_genes": 1.5}, r"n_top_genes must be a non-negative integer, got 1.5"),
        ({"batch_size": -5}, r"batch_size must be None or a positive integer, got -5"),
    ],
)
def test_scores_refuse_meaningless_options(trained, options, message):
    with pytest.raises(ValueError, match=message):
        trained[0].get_perturbation_scores(**options)


def test_scores_accept_numpy_integers(trained):
    scores = trained[0].get_perturbation_scores(n_top_genes=np.int64(3))
    assert all(row.count("(") == 3 for row in scores.perturbations["top_genes"])


def test_a_one_cell_perturbation_is_unscored_not_self_fitted():
    # Salient coordinates of a null screen: every cell drawn like the controls.
    rng = np.random.default_rng(0)
    salient = rng.normal(size=(203, 10))
    labels = np.array(["ctrl"] * 100 + ["A"] * 100 + ["solo"] + ["pair"] * 2)
    cells, summary = score_perturbations(salient, labels, labels == "ctrl")
    solo = summary.loc["solo"]
    assert not solo["scored"] and solo["n_responders"] == 0
    assert np.isnan(solo["effect_size"]) and np.isnan(solo["responder_fraction"])
    assert cells.loc[labels == "solo", "perturbation_score"].isna().all()
    # Fitted on itself, the solo cell's axis would point at it: a score of about
    # sqrt(10) control standard deviations, a "strong responder" of a null perturbation.
    assert summary.loc[["A", "pair"], "scored"].all()
    assert abs(summary.loc["pair", "effect_size"]) < 3
    with pytest.raises(ValueError, match=r"at least 2 control cells .* got 1"):
        score_perturbations(salient[100:], labels[100:], np.arange(103) == 0)


def test_a_one_cell_perturbation_in_a_query_is_flagged_unscored(trained, query):
    model = trained[0]
    query.obs.iloc[np.flatnonzero(query.obs["condition"] == "P1")[1:], 0] = "P2"
    scores = model.get_perturbation_scores(query, n_top_genes=0)
    row = scores.perturbations.loc["P1"]
    assert row["n_cells"] == 1 and not row["scored"] and np.isnan(row["effect_size"])
    assert scores.perturbations.index[-1] == "P1"  # NaN effect sizes sort last
    cell = scores.cells[scores.cells["condition"] == "P1"]
    assert cell["cell_class"].tolist() == ["unscored"]
    assert cell["perturbation_score"].isna().all()


# -------------------------------------------------------------- add_results
def test_add_results_refuses_keys_it_did_not_write(trained, query):
    model = trained[0]
    query.obs["compvi_class"] = "mine"
    before = query.copy()
    with pytest.raises(ValueError, match=r"adata\.obs\['compvi_class'\].*overwrite=True"):
        model.add_results(query, n_top_genes=0)
    assert_untouched(query, before)
    query.uns["mine"] = {"keep": 1}
    with pytest.raises(ValueError, match=r"adata\.uns\['mine'\].*did not write"):
        model.add_results(query, key_added="mine", n_top_genes=0)
    assert query.uns["mine"] == {"keep": 1}
    for key in ("a/b", "", 3):
        with pytest.raises(ValueError, match=r"key_added must be a non-empty string without"):
            model.add_results(query, key_added=key)
    model.add_results(query, n_top_genes=0, overwrite=True)
    assert query.uns["compvi"]["written_by"] == "compvi.ComparativeVI.add_results"
    model.add_results(query, n_top_genes=0)  # its own keys: replaced without asking


def test_add_results_never_overwrites_a_registered_column(screen):
    screen.obs["x_class"] = screen.obs["donor"]
    setup(screen, categorical_covariate_keys=["x_class"])
    model = small_model(screen)
    model.train(max_epochs=1, batch_size=64, enable_progress_bar=False)
    before = screen.copy()
    with pytest.raises(ValueError, match=r"adata\.obs\['x_class'\], which is registered"):
        model.add_results(key_added="x", n_top_genes=0, overwrite=True)
    assert_untouched(screen, before)


def test_add_results_keys_survive_h5ad_and_are_still_its_own(trained, query, tmp_path):
    model = trained[0]
    model.add_results(query, n_top_genes=0)
    query.write_h5ad(tmp_path / "a.h5ad")
    again = anndata.read_h5ad(tmp_path / "a.h5ad")
    model.add_results(again, n_top_genes=0)
    assert "X_compvi_salient" in again.obsm


# ------------------------------------------------------------------- load
def test_load_with_a_new_perturbation_names_it_and_writes_nothing(trained, query):
    _, _, path = trained
    query.obs.iloc[0, 0] = "P_new"
    before = query.copy()
    with pytest.raises(ValueError, match=r"not trained on: \['P_new'\].*label their cells"):
        compvi.ComparativeVI.load(path, adata=query)
    assert_untouched(query, before)
    assert "_scvi_batch" not in query.obs


def test_load_accepts_control_only_and_perturbed_only_anndata(trained, query):
    model, _, path = trained
    is_control = (query.obs["condition"] == "control").to_numpy()
    for cells in (is_control, ~is_control):
        part = query[cells].copy()
        loaded = compvi.ComparativeVI.load(path, adata=part)
        np.testing.assert_allclose(
            loaded.get_latent_representation(),
            model.get_latent_representation(indices=np.flatnonzero(cells)),
            rtol=0,
            atol=1e-5,
        )


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_load_of_a_corrupt_model_file_names_the_path(trained, query, tmp_path, damage):
    _, _, path = trained
    content = (path / "model.pt").read_bytes()
    broken = tmp_path / "broken"
    broken.mkdir()
    damaged = {
        "truncated": content[: len(content) // 2],
        "garbage": b"not a model" * 10,
        "empty": b"",
    }[damage]
    (broken / "model.pt").write_bytes(damaged)
    before = query.copy()
    with pytest.raises(ValueError, match=r"broken/model\.pt could not be read.*truncated or"):
        compvi.ComparativeVI.load(broken, adata=query)
    assert_untouched(query, before)


def test_load_from_a_folder_without_a_model_names_the_path(query, tmp_path):
    before = query.copy()
    with pytest.raises(ValueError, match=r"There is no .*missing/model\.pt; pass the folder"):
        compvi.ComparativeVI.load(tmp_path / "missing", adata=query)
    assert_untouched(query, before)


def test_salient_effect_groupby_with_nan_is_refused(trained, query):
    model = trained[0]
    query.obs["cluster"] = np.where(np.arange(query.n_obs) == 0, np.nan, 1.0)
    before = query.copy()
    with pytest.raises(ValueError, match=r"adata\.obs\['cluster'\] \(groupby\) has 1 missing"):
        model.get_salient_effect(query, groupby="cluster")
    assert_untouched(query, before)
    effect = model.get_salient_effect(query[1:].copy(), groupby="cluster")
    assert list(effect.index) == [1.0]
