"""Per-perturbation summaries of the salient space: mean shifts and their similarities."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import dendrogram, linkage
from scipy.spatial.distance import pdist, squareform

from .._docstrings import doc
from .._obsm import stored_representation
from ._utils import _finish

_SIMILARITY_LABELS = {
    "cosine": "cosine similarity",
    "correlation": "Pearson correlation",
    "euclidean": "Euclidean distance",
}


@doc.dedent
def salient_heatmap(
    adata: AnnData,
    *,
    groupby: str,
    salient_key: str = "X_compvi_salient",
    control_category: str | Sequence[str] | None = None,
    cmap: str = "RdBu_r",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes:
    """Plot the mean salient coordinates of each group of cells as a heatmap.

    Rows are the groups of ``adata.obs[groupby]`` (e.g. perturbations), columns the salient
    factors ``s1`` … ``sd``. The colour scale is symmetric around 0, so the sign of a shift
    reads directly from the colour.

    Parameters
    ----------
    %(salient_groups)s
    control_category
        Label or labels of the control cells in ``adata.obs[groupby]``. If given, each row is
        the shift of a group's mean from the mean of all control cells, and the control rows
        are left out.
    cmap
        A diverging colormap.
    ax
        Axes to draw into; ``None`` makes a figure sized to the table.
    %(show_save)s

    Returns
    -------
    The heatmap's axes; ``ax.images[0].get_array()`` holds the plotted means. Nothing is
    written to ``adata``.

    """
    means = _group_means(adata, groupby, salient_key, control_category)
    n_groups, n_factors = means.shape
    if ax is None:
        _, ax = plt.subplots(
            figsize=(1.5 + 0.45 * n_factors, 1.2 + 0.3 * n_groups), layout="constrained"
        )
    fig = ax.figure
    vmax = float(np.abs(means.to_numpy()).max()) or 1.0
    image = ax.imshow(means.to_numpy(), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_xticks(range(n_factors), means.columns)
    ax.set_yticks(range(n_groups), means.index)
    ax.set(xlabel="salient factor", ylabel=groupby)
    label = "mean shift from controls" if control_category is not None else "mean"
    fig.colorbar(image, ax=ax, label=label)
    _finish(fig, show, save)
    return ax


@doc.dedent
def perturbation_clustermap(
    adata: AnnData,
    *,
    groupby: str,
    salient_key: str = "X_compvi_salient",
    control_category: str | Sequence[str] | None = None,
    metric: Literal["cosine", "correlation", "euclidean"] = "cosine",
    method: str = "average",
    show: bool | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Cluster the groups of cells by their mean salient coordinates.

    A dendrogram of the groups' mean salient vectors is drawn beside a heatmap of their
    pairwise similarities, both in the dendrogram's leaf order: perturbations that act
    alike (e.g. members of one complex or pathway) form blocks along the diagonal.

    Parameters
    ----------
    %(salient_groups)s
    control_category
        Label or labels of the control cells in ``adata.obs[groupby]``. If given, each
        group's mean is shifted by the mean of all control cells, and the controls are left
        out. Give it for ``"cosine"``: without it, a shift the controls share with every
        group makes them all look alike.
    metric
        Distance between mean vectors, from :func:`scipy.spatial.distance.pdist`. The
        heatmap shows the similarity ``1 - distance`` for ``"cosine"`` (cosine similarity)
        and ``"correlation"`` (Pearson correlation), both on a fixed scale from -1 to 1, and
        the distance itself for ``"euclidean"``, which has no natural similarity.
    method
        Linkage method of :func:`scipy.cluster.hierarchy.linkage`.
    %(show_save)s

    Returns
    -------
    The figure; ``figure.axes`` are the dendrogram, the heatmap and its colourbar. The
    heatmap's tick labels give the leaf order, its rows running from top to bottom and its
    columns from left to right. Nothing is written to ``adata``.

    """
    if metric not in _SIMILARITY_LABELS:
        raise ValueError(f"metric must be one of {list(_SIMILARITY_LABELS)}, got {metric!r}.")
    means = _group_means(adata, groupby, salient_key, control_category)
    if len(means) < 2:
        raise ValueError(f"Clustering needs at least two groups, got {list(means.index)}.")
    distances = pdist(means.to_numpy(), metric=metric)
    if not np.isfinite(distances).all():
        raise ValueError(
            f"The {metric} distance is undefined between some groups: a group's mean salient "
            "vector is zero (cosine) or constant (correlation). Use metric='euclidean'."
        )
    tree = linkage(distances, method=method)
    n_groups = len(means)
    fig, (ax_tree, ax_heat) = plt.subplots(
        1,
        2,
        figsize=(3 + 0.35 * n_groups, 1.5 + 0.3 * n_groups),
        width_ratios=(1, 4),
        layout="constrained",
    )
    # orientation="left" puts the first leaf at the bottom; flipping the tree puts it at the
    # top, next to the heatmap's first row, so the diagonal runs from top left as usual.
    leaves = dendrogram(
        tree,
        orientation="left",
        ax=ax_tree,
        no_labels=True,
        color_threshold=0,
        above_threshold_color="k",
    )["leaves"]
    ax_tree.invert_yaxis()
    ax_tree.set_axis_off()
    matrix = squareform(distances)
    if metric == "euclidean":
        image = ax_heat.imshow(matrix[np.ix_(leaves, leaves)], cmap="Reds_r", aspect="auto")
    else:
        image = ax_heat.imshow(
            1 - matrix[np.ix_(leaves, leaves)],
            cmap="RdBu_r",
            vmin=-1,
            vmax=1,
            aspect="auto",
        )
    labels = means.index[leaves]
    ax_heat.set_xticks(range(n_groups), labels, rotation=90)
    ax_heat.set_yticks(range(n_groups), labels)
    ax_heat.yaxis.tick_right()
    fig.colorbar(image, ax=ax_heat, label=_SIMILARITY_LABELS[metric])
    _finish(fig, show, save)
    return fig


def _group_means(
    adata: AnnData,
    groupby: str,
    salient_key: str,
    control_category: str | Sequence[str] | None,
) -> pd.DataFrame:
    """Mean salient coordinates per group, minus the controls' mean if they are given.

    Rows are the groups with cells, in category order (sorted for non-categorical
    columns), without the controls when ``control_category`` is given; columns are the
    factors ``s1`` … ``sd``.
    """
    if groupby not in adata.obs.columns:
        raise KeyError(f"{groupby!r} is not a column of adata.obs.")
    salient = stored_representation(adata, salient_key, "salient")
    if not np.isfinite(salient).all():
        raise ValueError(f"adata.obsm[{salient_key!r}] contains NaN or infinite values.")
    # A RangeIndex aligns the labels with the rows of `frame` even if obs_names repeat.
    groups = adata.obs[groupby].reset_index(drop=True)
    frame = pd.DataFrame(salient, columns=[f"s{i + 1}" for i in range(salient.shape[1])])
    means = frame.groupby(groups, observed=True).mean()
    if control_category is None:
        return means
    controls = [control_category] if isinstance(control_category, str) else list(control_category)
    missing = [label for label in controls if label not in means.index]
    if missing:
        raise ValueError(f"Control label(s) {missing} have no cells in adata.obs[{groupby!r}].")
    shift = frame[groups.isin(controls)].mean()
    return means.drop(index=controls) - shift
