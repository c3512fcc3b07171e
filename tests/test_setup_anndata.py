from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import compvi
from compvi.data import simulate_screen


def setup(adata, **kwargs):
    kwargs.setdefault("condition_key", "condition")
    kwargs.setdefault("control_category", "control")
    compvi.ComparativeVI.setup_anndata(adata, **kwargs)


def test_setup_registers_fields_and_only_adds_scvi_columns(screen):
    before = screen.copy()
    setup(
        screen,
        batch_key="batch",
        categorical_covariate_keys=["donor"],
        continuous_covariate_keys=["percent_mito"],
    )
    model = compvi.ComparativeVI(screen)
    assert model.control_categories == ["control"]
    assert model.conditions == ["control", "P1", "P2", "P3"]
    assert model.summary_stats.n_batch == 2
    added = set(screen.obs.columns) - set(before.obs.columns)
    assert added and all(c.startswith("_scvi") for c in added)
    assert (screen.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(screen.obs[before.obs.columns], before.obs)


def test_control_category_accepts_a_list(screen):
    screen.obs["condition"] = screen.obs["condition"].astype(str)
    setup(screen, control_category=["control", "P3"])
    model = compvi.ComparativeVI(screen)
    expected = sorted(model.conditions.index(c) for c in ("control", "P3"))
    assert model._control_codes() == expected
    perturbed = model._is_perturbed(model.adata_manager)
    np.testing.assert_array_equal(perturbed, ~screen.obs["condition"].isin(["control", "P3"]))


def _assert_untouched(adata, before):
    assert list(adata.obs.columns) == list(before.obs.columns)
    assert set(adata.uns) == set(before.uns)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"condition_key": "perturbation"}, KeyError, "condition_key='perturbation'"),
        ({"control_category": "ctrl"}, ValueError, r"control_category \['ctrl'\] not found"),
        ({"control_category": ["control", "NT"]}, ValueError, r"\['NT'\] not found"),
        ({"control_category": []}, ValueError, "non-empty list"),
        ({"batch_key": "lane"}, KeyError, "batch_key='lane'"),
        ({"categorical_covariate_keys": ["sex"]}, KeyError, "categorical_covariate_keys='sex'"),
        ({"continuous_covariate_keys": ["donor"]}, ValueError, "must be finite numbers"),
        ({"size_factor_key": "donor"}, ValueError, "positive numbers"),
        ({"layer": "counts"}, KeyError, "layer='counts' is not in adata.layers"),
    ],
)
def test_bad_keys_raise_and_leave_adata_untouched(screen, kwargs, error, match):
    before = screen.copy()
    with pytest.raises(error, match=match):
        setup(screen, **kwargs)
    _assert_untouched(screen, before)


def test_all_control_cells_raise(screen):
    screen.obs["condition"] = "control"
    with pytest.raises(ValueError, match="needs perturbed cells"):
        setup(screen)


def test_condition_category_without_cells_raises(screen):
    screen.obs["condition"] = screen.obs["condition"].cat.add_categories(["P9"])
    with pytest.raises(ValueError, match=r"categories with no cells: \['P9'\].*remove_unused"):
        setup(screen)


def test_control_category_with_no_cells_raises(screen):
    screen = screen[screen.obs["condition"] != "control"].copy()
    screen.obs["condition"] = screen.obs["condition"].cat.remove_unused_categories()
    with pytest.raises(ValueError, match="not found"):
        setup(screen)


def test_missing_condition_values_raise(screen):
    screen.obs["condition"] = screen.obs["condition"].astype(object)
    screen.obs.iloc[3, screen.obs.columns.get_loc("condition")] = np.nan
    with pytest.raises(ValueError, match="1 missing values"):
        setup(screen)


def test_nan_in_continuous_covariate_raises(screen):
    screen.obs.iloc[0, screen.obs.columns.get_loc("percent_mito")] = np.nan
    with pytest.raises(ValueError, match="percent_mito"):
        setup(screen, continuous_covariate_keys=["percent_mito"])


@pytest.mark.parametrize(
    ("value", "match"),
    [(np.nan, "contains NaN"), (np.inf, "contains infinite"), (-1.0, "contains negative")],
)
@pytest.mark.parametrize("layer", [None, "counts"])
def test_bad_counts_raise_naming_the_matrix(screen, value, match, layer):
    x = screen.X.toarray()
    x[5, 3] = value
    if layer is None:
        screen.X = sparse.csr_matrix(x)
        name = r"adata\.X"
    else:
        screen.layers[layer] = x
        name = r"adata\.layers\['counts'\]"
    with pytest.raises(ValueError, match=f"{name} {match}"):
        setup(screen, layer=layer)


def test_cells_with_zero_counts_raise(screen):
    x = screen.X.toarray()
    x[[1, 2]] = 0
    screen.X = sparse.csr_matrix(x)
    with pytest.raises(ValueError, match="2 cells have zero total counts"):
        setup(screen)


def test_empty_anndata_raises(screen):
    with pytest.raises(ValueError, match="empty"):
        setup(screen[:0].copy())


def test_non_integer_counts_warn_and_log_normalized_data_is_refused(screen):
    noisy = screen.copy()
    noisy.X = noisy.X * 1.5
    with pytest.warns(UserWarning, match="count data"):
        setup(noisy)
    compvi.ComparativeVI(noisy)  # non-integer but count-scale: allowed after the warning

    lognorm = screen.copy()
    lognorm.X = lognorm.X.log1p()
    with pytest.warns(UserWarning, match="count data"):
        setup(lognorm)
    with pytest.raises(ValueError, match=r"looks log-normalized.*layer='counts'"):
        compvi.ComparativeVI(lognorm, gene_likelihood="nb")


def test_string_and_categorical_conditions_register_the_same(screen):
    as_string = screen.copy()
    as_string.obs["condition"] = as_string.obs["condition"].astype(str)
    setup(screen)
    setup(as_string)
    a, b = compvi.ComparativeVI(screen), compvi.ComparativeVI(as_string)
    assert sorted(a.conditions) == sorted(b.conditions)
    np.testing.assert_array_equal(
        a._is_perturbed(a.adata_manager), b._is_perturbed(b.adata_manager)
    )


def test_model_arguments_are_validated():
    adata = simulate_screen(n_cells=100, n_genes=20)
    setup(adata)
    with pytest.raises(ValueError, match="gene_likelihood='gaussian'"):
        compvi.ComparativeVI(adata, gene_likelihood="gaussian")
    with pytest.raises(ValueError, match="n_salient_latent must be a positive integer"):
        compvi.ComparativeVI(adata, n_salient_latent=0)
    with pytest.raises(ValueError, match="dropout_rate"):
        compvi.ComparativeVI(adata, dropout_rate=1.0)


def _sample(adata):
    """A donor-by-condition sample id: every sample holds one group only."""
    donor = np.where(np.arange(adata.n_obs) % 2 == 0, "d1", "d2")
    group = np.where(adata.obs["condition"] == "control", "ctrl", "pert")
    return pd.Categorical([f"{g}_{d}" for g, d in zip(group, donor, strict=True)])


def test_a_covariate_that_separates_the_groups_is_warned_about(screen):
    screen.obs["sample"] = _sample(screen)
    with pytest.warns(UserWarning, match=r"adata.obs\['sample'\] \(batch_key\) separates"):
        setup(screen, batch_key="sample")
    with pytest.warns(UserWarning, match=r"\(categorical_covariate_keys\[1\]\) separates"):
        setup(screen, batch_key="batch", categorical_covariate_keys=["donor", "sample"])


def test_covariates_spread_over_both_groups_raise_no_warning(screen, recwarn):
    screen.obs["donor_only"] = pd.Categorical(
        np.where(np.arange(screen.n_obs) % 2 == 0, "d1", "d2")
    )
    setup(screen, batch_key="batch", categorical_covariate_keys=["donor", "donor_only"])
    assert not [w for w in recwarn if "separates" in str(w.message)]
