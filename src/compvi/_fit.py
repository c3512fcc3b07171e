"""The ``compvi fit`` job: fit ComparativeVI to an h5ad file and write the embeddings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad

from ._model import ComparativeVI


def fit_h5ad(
    input_path: str | Path,
    output_path: str | Path,
    *,
    condition_key: str,
    control_category: Sequence[str],
    batch_key: str | None = None,
    layer: str | None = None,
    max_epochs: int | None = None,
    model_dir: str | Path | None = None,
) -> ad.AnnData:
    """Read an h5ad file, fit ComparativeVI, and write the AnnData with its embeddings.

    Nothing is written unless the whole job succeeds: the model goes to ``model_dir`` and
    the AnnData to a temporary file that is renamed to ``output_path`` at the end.

    Parameters
    ----------
    input_path
        h5ad file with raw counts in ``X`` or ``layer``.
    output_path
        Where to write the AnnData.
    condition_key, control_category, batch_key, layer
        As in :meth:`~compvi.ComparativeVI.setup_anndata`.
    max_epochs
        As in :meth:`~compvi.ComparativeVI.train`.
    model_dir
        Folder to save the trained model to; ``None`` does not save it.

    Returns
    -------
    The AnnData written, with the embeddings, perturbation scores and per-perturbation
    summary of :meth:`~compvi.ComparativeVI.add_results` (``obsm["X_compvi_salient"]``,
    ``obsm["X_compvi_background"]``, ``obs["compvi_perturbation_score"]``,
    ``obs["compvi_class"]``, ``uns["compvi"]["perturbations"]``, ...).

    """
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file {str(input_path)!r} does not exist.")
    if output_path.suffix != ".h5ad":
        raise ValueError(f"--out must name an .h5ad file, got {str(output_path)!r}.")
    adata = ad.read_h5ad(input_path)
    ComparativeVI.setup_anndata(
        adata,
        condition_key=condition_key,
        control_category=list(control_category),
        batch_key=batch_key,
        layer=layer,
    )
    model = ComparativeVI(adata)
    model.train(max_epochs=max_epochs)
    model.add_results(adata)
    if model_dir is not None:
        model.save(model_dir, overwrite=True)
    partial = output_path.with_name(f".{output_path.name}.partial")
    adata.write_h5ad(partial)
    os.replace(partial, output_path)
    return adata
