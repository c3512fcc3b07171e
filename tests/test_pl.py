from __future__ import annotations

import numpy as np
import pytest
from conftest import fit

import compvi


def test_training_diagnostics_draws_every_curve_and_the_bounds(screen, tmp_path):
    model = fit(screen, max_epochs=4)
    path = tmp_path / "diagnostics.png"
    fig = compvi.pl.training_diagnostics(model, save=path)
    objectives, mgda, measures, multipliers = fig.axes
    assert [line.get_label() for line in objectives.lines] == ["control", "perturbed"]
    np.testing.assert_allclose(
        objectives.lines[0].get_ydata(),
        model.history["loss_control_train"].to_numpy(dtype=float).ravel(),
    )
    assert len(mgda.lines[0].get_ydata()) == 4
    bounds = sorted(line.get_ydata()[0] for line in measures.lines if line.get_linestyle() == "--")
    assert bounds == pytest.approx([0.002, 0.05])
    assert [line.get_label() for line in multipliers.lines] == ["leakage", "dependence"]
    assert path.stat().st_size > 5_000


def test_training_diagnostics_needs_a_trained_model(screen):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control"
    )
    with pytest.raises(ValueError, match=r"call model\.train\(\) first"):
        compvi.pl.training_diagnostics(compvi.ComparativeVI(screen), show=False)
