"""Property-based tests of the queries of a trained model on random small AnnData (issue 17).

Whatever the query AnnData (counts that may hold NaN, negative, non-integer values or empty
cells; known, unseen or missing labels and batches; duplicated names) and whatever the
arguments (indices, scoring and DE options, ``key_added``), a query either answers with a
result of the right shape, leaving the counts and the user's columns as they were, or raises
a ``ValueError``/``KeyError`` and leaves the AnnData exactly as it was. No other exception.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scvi
from anndata import AnnData
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import sparse

import compvi
from compvi.data import simulate_screen

LABELS = ["control", "P1", "P2", "P3", "P_new"]
BATCHES = ["batch_0", "batch_1", None, "batch_9"]


@pytest.fixture(scope="module")
def model():
    scvi.settings.seed = 0
    adata = simulate_screen(n_cells=80, n_genes=6, n_batches=2, seed=7)
    compvi.ComparativeVI.setup_anndata(
        adata, condition_key="condition", control_category="control", batch_key="batch"
    )
    vi = compvi.ComparativeVI(adata, n_background_latent=2, n_salient_latent=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vi.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    return vi


@st.composite
def queries(draw) -> AnnData:
    """A random query AnnData with the model's six genes, damaged one way or not at all."""
    n_obs = draw(st.integers(1, 16))
    counts = draw(arrays(np.float64, (n_obs, 6), elements=st.integers(0, 30).map(float)))
    counts[:, 1] += 1  # no empty cell unless drawn
    labels = draw(st.lists(st.sampled_from(LABELS[:4]), min_size=n_obs, max_size=n_obs))
    batches = draw(st.lists(st.sampled_from(BATCHES[:2]), min_size=n_obs, max_size=n_obs))
    names = [f"q{i}" for i in range(n_obs)]
    damage = draw(
        st.sampled_from(
            ["none"] * 7
            + ["nan", "negative", "log", "empty cell", "new label", "bad batch", "names"]
        )
    )
    event(f"query: {damage}")
    row = draw(st.integers(0, n_obs - 1))
    if damage == "nan":
        counts[row, 0] = np.nan
    elif damage == "negative":
        counts[row, 0] = -2
    elif damage == "log":
        counts = np.log1p(counts) / 2
    elif damage == "empty cell":
        counts[row] = 0
    elif damage == "new label":
        labels[row] = LABELS[4]
    elif damage == "bad batch":
        batches[row] = draw(st.sampled_from(BATCHES[2:]))
    elif damage == "names":
        names = [f"q{i // 2}" for i in range(n_obs)]
    obs = pd.DataFrame({"condition": labels, "batch": batches}, index=names)
    matrix = sparse.csr_matrix(counts) if draw(st.booleans()) else counts
    var = pd.DataFrame(index=[f"gene_{j}" for j in range(6)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata warns about duplicated names
        return AnnData(X=matrix, obs=obs, var=var)


def _indices(draw, n_obs: int, valid: bool):
    kind = draw(st.sampled_from(["none", "positions", "mask"]))
    if kind == "none":
        return None
    if kind == "positions":
        values = st.integers(0, n_obs - 1) if valid else st.integers(-2, n_obs + 1)
        return draw(st.lists(values, min_size=1 if valid else 0, max_size=6))
    length = n_obs if valid else draw(st.sampled_from([n_obs - 1, n_obs + 1]))
    mask = np.asarray(draw(st.lists(st.booleans(), min_size=length, max_size=length)))
    if valid and not mask.any():
        mask[0] = True
    return mask


# Each argument: (valid values, invalid values).
ARGUMENTS = {
    "batch_size": ([None, 4, np.int64(3)], [0, 2.5]),
    "library_size": ([1.0, 1e4], [0.0, -1.0, np.nan]),
    "n_samples": ([None, 2, np.int64(2)], [0, 1.5]),
    "min_effect": ([1.0, 0.0], [np.nan, -1.0]),
    "threshold": ([0.5, 0.9], [0.0, 1.0]),
    "n_top_genes": ([0, np.int64(2)], [-1, 1.5]),
    "key_added": (["q", "res"], ["a/b", ""]),
    "reference": (["counterfactual", "control"], []),
    "delta": ([0.25, None], [0.0, -1.0]),
    "fdr_target": ([0.05, 0.2], [0.0, 2.0]),
    "pseudocounts": ([None, 1e-4], [-1.0]),
    "n_samples_overall": ([5, np.int64(5)], [0]),
}
METHOD_ARGUMENTS = {
    "latent": ["batch_size"],
    "expression": ["library_size", "n_samples"],
    "scores": ["min_effect", "threshold", "n_top_genes"],
    "add_results": ["min_effect", "threshold", "n_top_genes", "key_added"],
    "differential_expression": [
        "reference",
        "delta",
        "fdr_target",
        "pseudocounts",
        "n_samples_overall",
    ],
}


@st.composite
def calls(draw, n_obs: int):
    """A query method and its arguments: all valid, or one of them invalid."""
    name = draw(st.sampled_from(sorted(METHOD_ARGUMENTS)))
    names = METHOD_ARGUMENTS[name] + (["indices"] if name in ("latent", "expression") else [])
    broken = draw(st.sampled_from([None] * 2 * len(names) + names))
    event(f"argument: {'valid' if broken is None else 'invalid'}")
    kwargs = {}
    for argument in names:
        if argument == "indices":
            kwargs[argument] = _indices(draw, n_obs, valid=broken != argument)
            continue
        valid, invalid = ARGUMENTS[argument]
        pool = invalid if broken == argument and invalid else valid
        kwargs[argument] = draw(st.sampled_from(pool))
    if name == "differential_expression":
        kwargs["silent"] = True
    return name, kwargs


def _run(model, adata, name, kwargs):
    if name == "latent":
        return model.get_latent_representation(adata, **kwargs)
    if name == "expression":
        return model.get_normalized_expression(adata, **kwargs)
    if name == "scores":
        return model.get_perturbation_scores(adata, **kwargs)
    if name == "add_results":
        return model.add_results(adata, **kwargs)
    return model.differential_expression(adata, **kwargs)


def _dense(x) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def _n_selected(indices, n_obs: int) -> int:
    if indices is None:
        return n_obs
    array = np.asarray(indices)
    return int(array.sum()) if array.dtype == bool else len(array)


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_queries_answer_or_refuse_leaving_adata_untouched(model, data):
    adata = data.draw(queries())
    name, kwargs = data.draw(calls(adata.n_obs))
    before = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = _run(model, adata, name, kwargs)
        except (ValueError, KeyError) as error:
            event(f"{name} refused: {type(error).__name__}")
            np.testing.assert_array_equal(_dense(adata.X), _dense(before.X))
            pd.testing.assert_frame_equal(adata.obs, before.obs)
            assert set(adata.uns) == set(before.uns)
            assert set(adata.obsm) == set(before.obsm)
            return
        except Exception as error:
            pytest.fail(f"{name}({kwargs}) raised {type(error).__name__}: {error}")
    event(f"{name} answered")
    np.testing.assert_array_equal(_dense(adata.X), _dense(before.X))
    pd.testing.assert_frame_equal(adata.obs[before.obs.columns], before.obs)
    if name == "latent":
        assert result.shape == (_n_selected(kwargs["indices"], adata.n_obs), 2)
        assert np.isfinite(result).all()
    elif name == "expression":
        assert result.shape == (_n_selected(kwargs["indices"], adata.n_obs), 6)
        np.testing.assert_allclose(result.sum(1), kwargs["library_size"], rtol=1e-4)
    elif name == "scores":
        assert list(result.cells.index) == list(adata.obs_names)
        unscored = result.perturbations.loc[~result.perturbations["scored"]]
        assert (unscored["n_cells"] < 2).all() and (unscored["n_responders"] == 0).all()
    elif name == "add_results":
        assert adata.uns[kwargs["key_added"]]["written_by"] == "compvi.ComparativeVI.add_results"
        assert adata.obsm[f"X_{kwargs['key_added']}_salient"].shape == (adata.n_obs, 2)
    else:
        assert set(result.index) == set(adata.var_names)
        assert result["proba_de"].between(0, 1).all()
