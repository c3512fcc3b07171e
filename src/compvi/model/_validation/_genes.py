"""Checks on genes: unique names, and the genes a trained model expects, in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from ._mudata import located


def check_same_genes(
    adata: AnnData | MuData, model_var_names: Sequence[str] | Mapping, *, reorder: bool = False
) -> AnnData | MuData:
    """Require ``adata.var_names`` to be the model's genes, in the training order.

    Parameters
    ----------
    adata
        The AnnData to check; it is never modified.
    model_var_names
        The genes the model was trained on, in training order.
    reorder
        Accept the same genes in another order and return a copy of ``adata`` with the
        genes put in training order (what :meth:`ComparativeVI.load` does, once). Otherwise
        such an AnnData raises: encoding it as is would silently feed each gene's counts to
        another gene's weights.

    Returns
    -------
    ``adata`` itself when its genes are in training order, else (``reorder=True``) the
    reordered copy.

    """
    if isinstance(model_var_names, Mapping):
        # A model set up with setup_mudata saves its features per modality.
        check_same_modality_genes(adata, model_var_names)
        return adata
    model_var_names = pd.Index(np.asarray(model_var_names).astype(str))
    var_names = adata.var_names.astype(str)
    if var_names.equals(model_var_names):
        return adata
    missing = model_var_names.difference(var_names)
    extra = var_names.difference(model_var_names)
    if missing.empty and extra.empty and var_names.is_unique and model_var_names.is_unique:
        if reorder:
            return adata[:, var_names.get_indexer(model_var_names)].copy()
        raise ValueError(
            "adata has the model's genes in another order, so each gene's counts would meet "
            "another gene's weights; put them in training order first with "
            "adata = adata[:, model.adata.var_names].copy() (ComparativeVI.load does this "
            "itself)."
        )
    raise ValueError(
        f"adata.var_names differ from the genes the model was trained on: "
        f"{len(missing)} missing (e.g. {list(missing[:5])}), {len(extra)} extra "
        f"(e.g. {list(extra[:5])}). Subset adata to the training genes, in training order."
    )


def check_unique_var_names(adata: AnnData) -> None:
    """Refuse duplicated gene names: results indexed by gene would be ambiguous."""
    if adata.var_names.is_unique:
        return
    duplicated = adata.var_names[adata.var_names.duplicated()].unique()
    raise ValueError(
        f"adata.var_names has {len(duplicated)} duplicated gene names (e.g. "
        f"{list(duplicated[:5])}); results indexed by gene (normalized expression, "
        "differential expression, top genes of the perturbation scores) would be ambiguous. "
        "Make them unique first with adata.var_names_make_unique()."
    )


def check_same_modality_genes(mdata: AnnData | MuData, model_var_names: Mapping) -> None:
    """Require every modality a MuData model was saved with, with the same features in order."""
    if not isinstance(mdata, MuData):
        raise ValueError(
            f"The model was trained on a MuData (modalities {list(model_var_names)}); "
            "load it with a MuData that has those modalities, not an AnnData."
        )
    for modality, var_names in model_var_names.items():
        if modality not in mdata.mod:
            raise ValueError(
                f"mdata has no modality {modality!r}, which the model was trained with "
                f"(modalities of mdata: {list(mdata.mod)})."
            )
        with located(f"mdata.mod[{modality!r}]"):
            check_same_genes(mdata.mod[modality], var_names)
