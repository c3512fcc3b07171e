from __future__ import annotations

import numpy as np
import pytest
from conftest import fit

import compvi
from compvi._constants import DEFAULT_BOUNDS


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
    # Each measure is drawn relative to its bound, which is the dashed line at 1.
    curves = {line.get_label(): line.get_ydata() for line in measures.lines}
    for name in ("leakage", "dependence", "background_shift"):
        expected = model.history[f"{name}_train"].to_numpy(dtype=float).ravel()
        np.testing.assert_allclose(curves[name], expected / DEFAULT_BOUNDS[name], rtol=1e-6)
    dashed = [line.get_ydata()[0] for line in measures.lines if line.get_linestyle() == "--"]
    assert dashed == [1.0]
    assert [line.get_label() for line in multipliers.lines] == [
        "leakage",
        "dependence",
        "background_shift (largest)",
    ]
    np.testing.assert_allclose(
        multipliers.lines[2].get_ydata(),
        model.history["background_shift_multiplier"].to_numpy(dtype=float).ravel(),
    )
    assert multipliers.get_yscale() == "log"
    assert path.stat().st_size > 5_000


def test_training_diagnostics_needs_a_trained_model(screen):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control"
    )
    with pytest.raises(ValueError, match=r"call model\.train\(\) first"):
        compvi.pl.training_diagnostics(compvi.ComparativeVI(screen), show=False)


def test_training_diagnostics_adds_the_graph_panel_for_the_sparse_prior(screen):
    model = fit(
        screen,
        model={"prior": "sparse"},
        max_epochs=4,
        edge_bound=1.0,
        plan_kwargs={"edge_anneal_fraction": 0.5},
    )
    fig = compvi.pl.training_diagnostics(model, show=False)
    assert len(fig.axes) == 5
    edges, bound = fig.axes[4].lines
    np.testing.assert_allclose(
        edges.get_ydata(), model.history["edges_train"].to_numpy(dtype=float).ravel()
    )
    np.testing.assert_allclose(bound.get_ydata(), [4.0, 2.5, 1.0, 1.0])
    assert bound.get_linestyle() == "--"
    assert [line.get_label() for line in fig.axes[3].lines][-1] == "edges"
