"""Property-based tests of ``ComparativeVI.setup_anndata`` on random small AnnData.

Whatever the input, setup either registers it consistently (the model builds, the
condition codes match the labels, the perturbed mask is ``~obs[condition].isin(controls)``)
or raises a ``ValueError``/``KeyError``; the user's counts never change, and a failed setup
writes nothing to ``obs`` or ``uns``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import sparse

import compvi
from compvi._constants import REGISTRY_KEYS

LABELS = ["ctrl", "A", "B", "C"]
MATRIX_KINDS = {
    "dense": np.asarray,
    "csr_matrix": sparse.csr_matrix,
    "csc_matrix": sparse.csc_matrix,
    # scvi-tools cannot read sparse arrays; setup must refuse them with a ValueError.
    "csr_array": sparse.csr_array,
}


@st.composite
def screens(draw) -> tuple[AnnData, dict]:
    """A random small AnnData and the setup_anndata arguments to register it with."""
    n_obs = draw(st.integers(2, 30))
    n_vars = draw(st.integers(1, 8))
    counts = draw(arrays(np.int64, (n_obs, n_vars), elements=st.integers(0, 30)))
    labels = draw(st.lists(st.sampled_from(LABELS), min_size=n_obs, max_size=n_obs))
    obs = pd.DataFrame(index=[f"cell_{i}" for i in range(n_obs)])
    if draw(st.booleans()):
        # Categories from the labels present, or from the whole pool (unused categories).
        categories = LABELS if draw(st.booleans()) else sorted(set(labels))
        obs["condition"] = pd.Categorical(labels, categories=categories)
    else:
        obs["condition"] = labels
    kwargs = {"condition_key": "condition"}
    controls = draw(st.sampled_from(["ctrl", "A", "absent"]))
    kwargs["control_category"] = [controls, "B"] if draw(st.booleans()) else controls
    if draw(st.booleans()):
        obs["batch"] = draw(
            st.lists(st.sampled_from(["b1", "b2"]), min_size=n_obs, max_size=n_obs)
        )
        kwargs["batch_key"] = "batch"
    if draw(st.booleans()):
        values = np.linspace(0.0, 1.0, n_obs)
        if draw(st.booleans()):
            values[draw(st.integers(0, n_obs - 1))] = np.nan
        obs["score"] = values
        kwargs["continuous_covariate_keys"] = ["score"]
    if draw(st.booleans()):
        obs.index = [f"cell_{i // 2}" for i in range(n_obs)]  # duplicated obs names
    matrix = MATRIX_KINDS[draw(st.sampled_from(sorted(MATRIX_KINDS)))](counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata warns about duplicated obs names
        adata = AnnData(X=matrix, obs=obs)
    return adata, kwargs


def _dense(x) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(screens())
def test_setup_registers_consistently_or_raises_leaving_adata_untouched(screen):
    adata, kwargs = screen
    before = adata.copy()
    with warnings.catch_warnings():
        # scvi-tools warns about conditions with fewer than 3 cells, and anndata about
        # duplicated names: neither is what this property is about.
        warnings.simplefilter("ignore")
        try:
            compvi.ComparativeVI.setup_anndata(adata, **kwargs)
        except (ValueError, KeyError) as error:
            event(f"refused: {type(error).__name__}")
            np.testing.assert_array_equal(_dense(adata.X), _dense(before.X))
            pd.testing.assert_frame_equal(adata.obs, before.obs)
            assert set(adata.uns) == set(before.uns)
            return
        except Exception as error:
            pytest.fail(f"setup_anndata raised {type(error).__name__}: {error}")
        model = compvi.ComparativeVI(adata, n_background_latent=2, n_salient_latent=2, n_hidden=8)
    event("registered")
    np.testing.assert_array_equal(_dense(adata.X), _dense(before.X))
    codes = np.asarray(model.adata_manager.get_from_registry(REGISTRY_KEYS.CONDITION_KEY)).ravel()
    labels = before.obs["condition"].astype(str).to_numpy()
    np.testing.assert_array_equal(np.asarray(model.conditions)[codes], labels)
    controls = kwargs["control_category"]
    controls = [controls] if isinstance(controls, str) else controls
    np.testing.assert_array_equal(
        model._is_perturbed(model.adata_manager),
        ~before.obs["condition"].isin(controls).to_numpy(),
    )
