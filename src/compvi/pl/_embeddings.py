"""UMAPs of the background and salient spaces of a ComparativeVI model, side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import scanpy as sc
from anndata import AnnData
from matplotlib.figure import Figure

from .._docstrings import doc
from .._obsm import stored_representation
from ._utils import _finish


@doc.dedent
def embeddings(
    adata: AnnData,
    *,
    color: str | Sequence[str],
    salient_key: str = "X_compvi_salient",
    background_key: str = "X_compvi_background",
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
    %(show_save)s
    **kwargs
        Passed to :func:`scanpy.pl.embedding`, e.g. ``size``, ``palette``, ``legend_loc``.

    Returns
    -------
    The figure. Its first ``2 * len(color)`` axes are the panels, row by row (background
    left, salient right); colourbars of continuous colours come after them.

    Raises
    ------
    KeyError
        ``adata.obsm`` lacks a representation or its UMAP (run :func:`compvi.tl.umap`
        first), or ``color`` names neither an obs column nor a gene.

    Notes
    -----
    Colouring by a column of strings turns it into a categorical column and stores the
    colours of its categories in ``uns[f"{color}_colors"]``, as any scanpy plot does.

    """
    colors = [color] if isinstance(color, str) else list(color)
    if not colors:
        raise ValueError("color must name at least one column of adata.obs or gene.")
    for name in colors:
        _check_color(adata, name, kwargs.get("gene_symbols"))
    spaces = {"background": background_key, "salient": salient_key}
    for kind, key in spaces.items():
        stored_representation(adata, key, kind)
    for kind, key in spaces.items():
        if f"{key}_umap" not in adata.obsm:
            raise KeyError(
                f"adata.obsm has no {key + '_umap'!r}, the UMAP of the {kind} space. Run "
                f"compvi.tl.umap(adata, {kind}_key={key!r}) first."
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
