"""Tools that compute on an AnnData for the plots: UMAPs of the two latent spaces."""

from __future__ import annotations

from ._umap import umap

__all__ = ["umap"]
