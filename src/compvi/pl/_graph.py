"""Heatmap of a learned perturbation -> salient factor graph."""

from __future__ import annotations

from numbers import Real
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from .._docstrings import doc
from ._utils import _finish

# Outlines must stand out on both ends of a sequential colormap, unlike black or white.
_EDGE_COLOR = "tab:red"


@doc.dedent
def perturbation_graph(
    graph: pd.DataFrame,
    *,
    threshold: float = 0.5,
    cmap: str = "Greys",
    annotate: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes:
    """Plot a perturbation -> salient factor graph of edge probabilities as a heatmap.

    Rows are perturbations, columns salient factors, colours the edge probabilities on a
    fixed 0 to 1 scale. Cells whose probability is above ``threshold`` (the edges) are
    outlined, and the title counts them.

    Parameters
    ----------
    graph
        Edge probabilities in [0, 1], rows labelled by perturbation and columns by factor
        (e.g. ``"s1"`` … ``"sd"``), such as a model's learned perturbation graph.
    threshold
        Probability above which an entry is drawn as an edge, in (0, 1).
    cmap
        A sequential colormap.
    annotate
        Write each probability, to two decimals, in its cell.
    ax
        Axes to draw into (e.g. a panel of a larger figure); ``None`` makes a new figure.
    %(show_save)s

    Returns
    -------
    The heatmap's axes: ``ax.images[0].get_array()`` holds the probabilities and
    ``ax.patches`` the outlines of the edges, one :class:`~matplotlib.patches.Rectangle`
    per edge.

    """
    probabilities = _check_graph(graph)
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold!r}.")
    n_rows, n_columns = probabilities.shape
    if ax is None:
        _, ax = plt.subplots(
            figsize=(2.0 + 0.5 * n_columns, 1.2 + 0.35 * n_rows), layout="constrained"
        )
    fig = ax.figure
    image = ax.imshow(probabilities, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    edges = np.argwhere(probabilities > threshold)
    for row, column in edges:
        # Unclipped, so that outlines on the border cells are drawn in full.
        ax.add_patch(
            Rectangle(
                (column - 0.5, row - 0.5),
                1,
                1,
                fill=False,
                edgecolor=_EDGE_COLOR,
                linewidth=2,
                clip_on=False,
            )
        )
    if annotate:
        for (row, column), value in np.ndenumerate(probabilities):
            red, green, blue, _ = image.cmap(image.norm(value))
            # Light text on dark cells, whatever the colormap's direction.
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(
                column,
                row,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize="small",
                color="white" if dark else "black",
            )
    ax.set_xticks(range(n_columns), [str(label) for label in graph.columns])
    ax.set_yticks(range(n_rows), [str(label) for label in graph.index])
    ax.set(xlabel="salient factor", ylabel=graph.index.name or "perturbation")
    n_edges = len(edges)
    ax.set_title(f"{n_edges} edge{'' if n_edges == 1 else 's'} with probability > {threshold:g}")
    fig.colorbar(image, ax=ax, label="edge probability")
    _finish(fig, show, save)
    return ax


def _check_graph(graph: object) -> np.ndarray:
    """Return the probabilities of ``graph`` as a float array, or say what is wrong."""
    if not isinstance(graph, pd.DataFrame):
        raise ValueError(
            f"graph must be a pandas DataFrame with perturbations as rows and factors as "
            f"columns, got {type(graph).__name__}; wrap an array as pd.DataFrame(array, "
            "index=perturbations, columns=factors)."
        )
    if graph.empty:
        raise ValueError(f"graph must have at least one row and one column, got {graph.shape}.")
    try:
        probabilities = graph.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("graph must hold numeric edge probabilities.") from None
    if np.isnan(probabilities).any():
        raise ValueError("graph contains NaN; every entry must be an edge probability.")
    if ((probabilities < 0) | (probabilities > 1)).any():
        raise ValueError(
            "graph must hold edge probabilities in [0, 1], got values from "
            f"{probabilities.min():g} to {probabilities.max():g}."
        )
    return probabilities
