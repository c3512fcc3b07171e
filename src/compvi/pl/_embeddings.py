"""UMAPs of the background and salient spaces of a ComparativeVI model, side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import scanpy as sc
from anndata import AnnData
from matplotlib.figure import Figure

from ._utils import _embedding, _finish


def embeddings(
    adata: AnnData,
    *,
    color: str | Sequence[str],
    salient_key: str = "X_compvi_salient",
    background_key: str = "X_compvi_background",
    n_neighbors: int = 15,
    recompute: bool = False,
    random_state: int = 0,
    show: bool | None = None,
    save: str | Path | None = None,
    **kwargs: Any,
) -> Figure:
    """Plot UMAPs of the background and salient spaces side by side.

    In a good fit, the background space mixes control and perturbed cells and keeps the
    structure they share (cell type, cell cycle, batch), while the salient space separates
    the perturbations and collapses the controls near one point.

    Parameters
    ----------
    adata
        AnnData with the two representations in :attr:`~anndata.AnnData.obsm`.
    color
        Columns of ``adata.obs`` or genes to colour by; one row of panels each.
    salient_key
        Key of the salient representation in ``adata.obsm``.
    background_key
        Key of the background representation in ``adata.obsm``.
    n_neighbors
        Neighbours of the exact kNN graph (scikit-learn) the UMAP is computed from.
    recompute
        Compute the UMAPs again even if ``adata.obsm`` already holds them.
    random_state
        Seed of the neighbour search and of the UMAP.
    show
        Show the figure; ``None`` shows it unless ``save`` is given, as scanpy does.
    save
        Write the figure to this path.
    **kwargs
        Passed to :func:`scanpy.pl.embedding`, e.g. ``size``, ``palette``, ``legend_loc``.

    Returns
    -------
    The figure. Its first ``2 * len(color)`` axes are the panels, row by row (background
    left, salient right); colourbars of continuous colours come after them.

    Notes
    -----
    For each ``key`` of ``background_key`` and ``salient_key`` whose UMAP is computed, this
    writes to ``adata``:

    - ``obsm[f"{key}_umap"]``: the UMAP coordinates, ``(n_cells, 2)``;
    - ``uns[f"{key}_umap"]``: the UMAP parameters;
    - ``uns[f"{key}_neighbors"]``, ``obsp[f"{key}_neighbors_connectivities"]`` and
      ``obsp[f"{key}_neighbors_distances"]``: the kNN graph, from
      :func:`scanpy.pp.neighbors`.

    A UMAP already in ``obsm[f"{key}_umap"]`` is reused, and nothing is written for it,
    unless ``recompute=True``. As with any scanpy plot, colouring by a column of strings
    turns it into a categorical column, and colours of categories are stored in
    ``uns[f"{color}_colors"]``.

    """
    colors = [color] if isinstance(color, str) else list(color)
    if not colors:
        raise ValueError("color must name at least one column of adata.obs or gene.")
    for name in colors:
        _check_color(adata, name, kwargs.get("gene_symbols"))
    spaces = {"background": background_key, "salient": salient_key}
    for kind, key in spaces.items():
        _embedding(adata, key, kind)
    for key in spaces.values():
        if recompute or f"{key}_umap" not in adata.obsm:
            # Exact neighbours: latent spaces have few dimensions, so they are fast, and
            # scanpy 1.11's approximate (pynndescent) path above 4,096 cells fails with
            # SciPy >= 1.15 sparse arrays ("'csr_array' object has no attribute 'getnnz'").
            sc.pp.neighbors(
                adata,
                use_rep=key,
                n_neighbors=n_neighbors,
                random_state=random_state,
                transformer="sklearn",
                key_added=f"{key}_neighbors",
            )
            sc.tl.umap(
                adata,
                neighbors_key=f"{key}_neighbors",
                key_added=f"{key}_umap",
                random_state=random_state,
            )
    fig, axes = plt.subplots(
        len(colors), 2, figsize=(10, 4.2 * len(colors)), squeeze=False, layout="constrained"
    )
    for row, name in zip(axes, colors, strict=True):
        for ax, (kind, key) in zip(row, spaces.items(), strict=True):
            sc.pl.embedding(adata, basis=f"{key}_umap", color=name, ax=ax, show=False, **kwargs)
            ax.set(title=f"{kind}: {name}", xlabel="UMAP1", ylabel="UMAP2")
    _finish(fig, show, save)
    return fig


def _check_color(adata: AnnData, name: str, gene_symbols: str | None) -> None:
    """Raise a KeyError unless scanpy can colour by ``name``."""
    known = name in adata.obs.columns or name in adata.var_names
    if adata.raw is not None:
        known = known or name in adata.raw.var_names
    if gene_symbols is not None:
        known = known or name in set(adata.var[gene_symbols])
    if not known:
        raise KeyError(
            f"Cannot colour by {name!r}: it is neither a column of adata.obs nor a gene in "
            "adata.var_names."
        )
