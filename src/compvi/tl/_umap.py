"""UMAPs of the background and salient spaces, for :func:`compvi.pl.embeddings`."""

from __future__ import annotations

import scanpy as sc
from anndata import AnnData

from .._obsm import stored_representation


def umap(
    adata: AnnData,
    *,
    salient_key: str = "X_compvi_salient",
    background_key: str = "X_compvi_background",
    n_neighbors: int = 15,
    random_state: int = 0,
) -> None:
    """Compute a UMAP of each latent space, as :func:`compvi.pl.embeddings` draws them.

    Each space gets its own exact kNN graph (scikit-learn; latent spaces have few
    dimensions, so exact neighbours are fast) and its own UMAP, so the two stay
    comparable and neither overwrites ``adata.obsm["X_umap"]`` or ``adata.obsp``'s default
    graph.

    Parameters
    ----------
    adata
        AnnData with the two representations in :attr:`~anndata.AnnData.obsm`, e.g. from
        :meth:`compvi.ComparativeVI.add_results`.
    salient_key
        Key of the salient representation in ``adata.obsm``.
    background_key
        Key of the background representation in ``adata.obsm``.
    n_neighbors
        Neighbours of each kNN graph.
    random_state
        Seed of the neighbour search and of the UMAP.

    Returns
    -------
    Nothing; for each ``key`` of ``background_key`` and ``salient_key`` writes to ``adata``:

    - ``obsm[f"{key}_umap"]``: the UMAP coordinates, ``(n_cells, 2)``;
    - ``uns[f"{key}_umap"]``: the UMAP parameters;
    - ``uns[f"{key}_neighbors"]``, ``obsp[f"{key}_neighbors_connectivities"]`` and
      ``obsp[f"{key}_neighbors_distances"]``: the kNN graph, from
      :func:`scanpy.pp.neighbors`.

    Raises
    ------
    KeyError
        ``adata.obsm`` lacks one of the representations; nothing is written then.

    """
    spaces = {"background": background_key, "salient": salient_key}
    for kind, key in spaces.items():
        stored_representation(adata, key, kind)
    for key in spaces.values():
        # Exact neighbours: scanpy 1.11's approximate (pynndescent) path above 4,096 cells
        # fails with SciPy >= 1.15 sparse arrays ("'csr_array' object has no attribute
        # 'getnnz'").
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
