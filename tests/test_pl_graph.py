from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

import compvi

PERTURBATIONS = ["P1", "P2", "P3"]
FACTORS = ["s1", "s2", "s3", "s4"]


@pytest.fixture
def graph() -> pd.DataFrame:
    # Edges above 0.5: (P1, s1), (P2, s2), (P2, s4), (P3, s3); 0.5 itself is not an edge.
    return pd.DataFrame(
        [[0.9, 0.1, 0.0, 0.5], [0.2, 0.7, 0.3, 1.0], [0.05, 0.4, 0.6, 0.45]],
        index=pd.Index(PERTURBATIONS, name="condition"),
        columns=FACTORS,
    )


def outlined_cells(ax) -> set[tuple[int, int]]:
    """(row, column) of each outlined cell."""
    cells = set()
    for patch in ax.patches:
        assert isinstance(patch, Rectangle)
        x, y = patch.get_xy()
        cells.add((round(y + 0.5), round(x + 0.5)))
    return cells


def test_perturbation_graph_draws_the_probabilities_and_outlines_the_edges(graph):
    ax = compvi.pl.perturbation_graph(graph, show=False)
    image = ax.images[0]
    np.testing.assert_array_equal(image.get_array(), graph.to_numpy())
    assert image.get_clim() == (0.0, 1.0)
    assert outlined_cells(ax) == {(0, 0), (1, 1), (1, 3), (2, 2)}
    assert ax.get_title() == "4 edges with probability > 0.5"
    assert [label.get_text() for label in ax.get_xticklabels()] == FACTORS
    assert [label.get_text() for label in ax.get_yticklabels()] == PERTURBATIONS
    assert ax.get_ylabel() == "condition"
    assert image.colorbar.ax.get_ylabel() == "edge probability"
    texts = [text.get_text() for text in ax.texts]
    assert texts == [f"{value:.2f}" for value in graph.to_numpy().ravel()]
    # Light text on the darkest cell of "Greys", dark text on the lightest.
    colors = {text.get_text(): text.get_color() for text in ax.texts}
    assert colors["1.00"] == "white" and colors["0.00"] == "black"
    plt.close(ax.figure)


def test_perturbation_graph_threshold_and_no_annotation(graph):
    ax = compvi.pl.perturbation_graph(graph, threshold=0.65, annotate=False, show=False)
    assert outlined_cells(ax) == {(0, 0), (1, 1), (1, 3)}
    assert ax.get_title() == "3 edges with probability > 0.65"
    assert len(ax.texts) == 0
    plt.close(ax.figure)
    ax = compvi.pl.perturbation_graph(graph, threshold=0.95, show=False)
    assert outlined_cells(ax) == {(1, 3)}
    assert ax.get_title() == "1 edge with probability > 0.95"
    plt.close(ax.figure)


def test_perturbation_graph_without_an_index_name(graph):
    ax = compvi.pl.perturbation_graph(graph.rename_axis(index=None), show=False)
    assert ax.get_ylabel() == "perturbation"
    plt.close(ax.figure)


def test_perturbation_graph_draws_into_given_axes(graph):
    fig, (left, right) = plt.subplots(1, 2)
    ax = compvi.pl.perturbation_graph(graph, ax=right, show=False)
    assert ax is right and ax.figure is fig
    assert len(left.images) == 0
    np.testing.assert_array_equal(right.images[0].get_array(), graph.to_numpy())
    plt.close(fig)


def test_perturbation_graph_saves_the_figure(graph, tmp_path):
    path = tmp_path / "graph.png"
    ax = compvi.pl.perturbation_graph(graph, save=path, show=False)
    assert path.stat().st_size > 0
    plt.close(ax.figure)


@pytest.mark.parametrize(
    ("graph_value", "kwargs", "match"),
    [
        (np.full((3, 4), 0.5), {}, "graph must be a pandas DataFrame"),
        (pd.DataFrame(np.full((3, 4), 1.5)), {}, r"probabilities in \[0, 1\].*1\.5"),
        (pd.DataFrame(np.full((3, 4), -0.1)), {}, r"probabilities in \[0, 1\]"),
        (pd.DataFrame([[0.5, np.nan]]), {}, "graph contains NaN"),
        (pd.DataFrame([["a", "b"]]), {}, "numeric edge probabilities"),
        (pd.DataFrame(), {}, "at least one row and one column"),
        (pd.DataFrame(np.full((3, 4), 0.5)), {"threshold": 0.0}, "threshold"),
        (pd.DataFrame(np.full((3, 4), 0.5)), {"threshold": 1.0}, "threshold"),
        (pd.DataFrame(np.full((3, 4), 0.5)), {"threshold": "high"}, "threshold"),
    ],
)
def test_perturbation_graph_errors(graph_value, kwargs, match):
    open_figures = plt.get_fignums()
    with pytest.raises(ValueError, match=match):
        compvi.pl.perturbation_graph(graph_value, show=False, **kwargs)
    # Inputs are checked before a figure is opened.
    assert plt.get_fignums() == open_figures
