from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import compvi
from compvi.model._scvi_compat import batch_codes, fdr_de_prediction, read_saved_model


def test_fdr_flags_the_longest_prefix_whose_expected_fdr_is_within_target():
    probas = pd.Series([0.2, 0.99, 0.9, 0.97, 0.5], index=list("abcde"))
    # Sorted: b 0.99, d 0.97, c 0.9, e 0.5, a 0.2 -> expected FDRs 0.01, 0.02, 0.0467, 0.16...
    flags = fdr_de_prediction(probas, fdr=0.05)
    assert list(flags.index) == list("abcde")
    assert flags.to_dict() == {"a": False, "b": True, "c": True, "d": True, "e": False}
    assert fdr_de_prediction(probas, fdr=0.015).sum() == 1
    assert not fdr_de_prediction(probas, fdr=0.0).any()
    assert fdr_de_prediction(probas, fdr=1.0).all()
    with pytest.raises(ValueError, match="1-dimensional"):
        fdr_de_prediction(pd.DataFrame(np.ones((2, 2))), fdr=0.05)


def test_fdr_agrees_with_scvi_tools_where_it_still_has_its_version():
    de_core = pytest.importorskip("scvi.model.base._de_core")
    rng = np.random.default_rng(0)
    probas = pd.Series(rng.beta(0.5, 0.5, 500), index=[f"g{i}" for i in range(500)])
    for fdr in (0.01, 0.05, 0.2):
        pd.testing.assert_series_equal(
            fdr_de_prediction(probas, fdr), de_core._fdr_de_prediction(probas, fdr)
        )


def test_batch_codes_follow_the_registry(screen):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control", batch_key="batch"
    )
    model = compvi.ComparativeVI(screen, n_hidden=8)
    batches = list(screen.obs["batch"].cat.categories)
    manager = model.adata_manager
    assert batch_codes(manager, batches[1]) == [1]
    assert batch_codes(manager, [batches[1], None, batches[0]]) == [1, None, 0]
    with pytest.raises(ValueError, match="'batch_99' is not a valid batch category"):
        batch_codes(manager, "batch_99")


def test_read_saved_model_returns_the_registry_and_genes(screen, tmp_path):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control"
    )
    model = compvi.ComparativeVI(screen, n_hidden=8)
    model.save(tmp_path / "m", prefix="run1_")
    attr_dict, var_names = read_saved_model(tmp_path / "m", prefix="run1_")
    assert attr_dict["registry_"]["model_name"] == "ComparativeVI"
    assert list(var_names) == list(screen.var_names)
    with pytest.raises(OSError):
        read_saved_model(tmp_path / "m")  # no prefix: no such file
    torch.save(torch.zeros(2), tmp_path / "m" / "model.pt")
    with pytest.raises(KeyError, match="not a saved model"):
        read_saved_model(tmp_path / "m")
