"""Decoded expression of a ComparativeVI model: full, counterfactual, and their difference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._constants import EXPRESSION_KINDS
from .._docstrings import doc
from . import _validation
from ._base import ComparativeModelBase
from ._scvi_compat import batch_codes


class ExpressionMixin(ComparativeModelBase):
    """Expression decoded from both latent spaces, or from the background space alone."""

    @doc.dedent
    @_validation.leaves_adata_untouched_on_error
    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        *,
        kind: Literal["full", "background"] = "full",
        transform_batch: str | None = None,
        gene_list: Sequence[str] | None = None,
        library_size: float = 1.0,
        n_samples: int | None = None,
        return_mean: bool = True,
        batch_size: int | None = None,
        return_numpy: bool = False,
    ) -> pd.DataFrame | np.ndarray:
        """Return each cell's expected expression, decoded with or without its salient part.

        ``kind="full"`` keeps the salient coordinates of perturbed cells (what the model
        reconstructs); ``kind="background"`` sets them to zero for every cell: the
        counterfactual "this cell without its perturbation". Control cells decode with zero
        salient coordinates either way.

        Parameters
        ----------
        %(query_cells)s
        kind
            ``"full"`` or ``"background"``.
        transform_batch
            Decode every cell as if it came from this batch (a category of the registered
            batch key); ``None`` keeps each cell's own batch. Cells are still encoded with
            their own batch.
        gene_list
            Genes to return; ``None`` returns all.
        library_size
            Scale of the returned expression: ``1.0`` gives frequencies that sum to 1 over
            all genes, ``1e4`` counts per 10k.
        n_samples
            ``None`` decodes the posterior means of both latents (deterministic). An integer
            decodes that many posterior samples, averaged unless ``return_mean=False``.
        return_mean
            Average the ``n_samples`` decoded samples.
        batch_size
            Cells per minibatch; ``None`` uses ``scvi.settings.batch_size``.
        return_numpy
            Return an array instead of a DataFrame.

        Returns
        -------
        Cells x genes expression, as a DataFrame indexed by ``obs_names`` with ``var_names``
        columns unless ``return_numpy``. With ``n_samples > 1`` and ``return_mean=False``, an
        array of shape ``(n_samples, n_cells, n_genes)``.

        """
        if kind not in EXPRESSION_KINDS:
            raise ValueError(f"kind={kind!r} is not one of {EXPRESSION_KINDS}.")
        n_samples = _validation.check_integer(n_samples, "n_samples", minimum=1, allow_none=True)
        library_size = _validation.check_number(library_size, "library_size", low=0, low_open=True)
        batch_size = _validation.check_integer(
            batch_size, "batch_size", minimum=1, allow_none=True
        )
        adata = self._validate_anndata(adata)
        indices = _validation.check_indices(indices, adata.n_obs)
        samples, obs_names, genes = self._decode_expression(
            adata,
            indices,
            (kind,),
            transform_batch=transform_batch,
            gene_list=gene_list,
            library_size=library_size,
            n_samples=n_samples,
            batch_size=batch_size,
        )
        expression = samples[kind]
        if n_samples is not None and not return_mean:
            return expression
        expression = expression.mean(axis=0)
        if return_numpy:
            return expression
        return pd.DataFrame(expression, index=obs_names, columns=genes)

    @torch.inference_mode()
    def _decode_expression(
        self,
        adata: AnnData,
        indices: Sequence[int] | None,
        kinds: Sequence[str],
        *,
        transform_batch: str | None = None,
        gene_list: Sequence[str] | None = None,
        library_size: float = 1.0,
        n_samples: int | None = None,
        batch_size: int | None = None,
    ) -> tuple[dict[str, np.ndarray], pd.Index, pd.Index]:
        """Decode each kind from the same latent draws: ``(samples, cells, genes)`` per kind.

        Each minibatch is encoded once and every kind is decoded from the same posterior
        means (``n_samples=None``, one "sample") or the same posterior draws, so differences
        between kinds are paired cell by cell and draw by draw.
        """
        var_names = self._gene_names(adata)  # a MuData's var_names span every modality
        genes = var_names if gene_list is None else pd.Index(gene_list)
        missing = genes.difference(var_names)
        if len(missing):
            raise KeyError(f"gene_list has genes not in adata.var_names: {list(missing[:5])}.")
        gene_mask = torch.as_tensor(var_names.get_indexer(genes))
        batch_code = None
        if transform_batch is not None:
            (batch_code,) = batch_codes(
                self.get_anndata_manager(adata, required=True), transform_batch
            )
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        expression = {kind: [] for kind in kinds}
        for tensors in loader:
            inputs = self.module._get_inference_input(tensors)
            inference = self.module.inference(**inputs)
            covariates = inference["covariates"]
            if batch_code is not None:
                covariates = self.module.covariates(
                    torch.full_like(inputs["batch_index"], batch_code),
                    inputs["cat_covs"],
                    inputs["cont_covs"],
                ).to(covariates.device)
            draws = {kind: [] for kind in kinds}
            for _ in range(n_samples or 1):
                qz, qs = inference["qz"], inference["qs"]
                background = qz.loc if n_samples is None else qz.sample()
                salient = qs.loc if n_samples is None else qs.sample()
                library = inference["library"]
                if not self.module.use_observed_lib_size and n_samples is not None:
                    library = inference["ql"].sample()
                for kind in kinds:
                    generative = self.module.generative(
                        z=background,
                        s=torch.zeros_like(salient) if kind == "background" else salient,
                        library=library,
                        perturbed=inference["perturbed"],
                        covariates=covariates,
                    )
                    scale = generative["px_scale"][:, gene_mask.to(salient.device)]
                    draws[kind].append((scale * library_size).cpu())
            for kind in kinds:
                expression[kind].append(torch.stack(draws[kind]))
        obs_names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        samples = {kind: torch.cat(parts, dim=1).numpy() for kind, parts in expression.items()}
        return samples, obs_names, genes

    @doc.dedent
    @_validation.leaves_adata_untouched_on_error
    def get_salient_effect(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        *,
        groupby: str | None = None,
        gene_list: Sequence[str] | None = None,
        library_size: float = 1e4,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Return what the salient space adds to each cell's expression: full minus background.

        Parameters
        ----------
        %(query_cells)s
        groupby
            Column of ``adata.obs`` (e.g. the condition); if given, the effect is averaged
            over the cells of each group.
        gene_list
            Genes to return; ``None`` returns all.
        library_size
            Scale of the expression the difference is taken on (default: per 10k counts).
        batch_size
            Cells per minibatch; ``None`` uses ``scvi.settings.batch_size``.

        Returns
        -------
        Cells x genes (or groups x genes, with ``groupby``) DataFrame of expression
        differences; zero for control cells, whose salient part is never decoded.

        """
        library_size = _validation.check_number(library_size, "library_size", low=0, low_open=True)
        batch_size = _validation.check_integer(
            batch_size, "batch_size", minimum=1, allow_none=True
        )
        adata = self._validate_anndata(adata)
        indices = _validation.check_indices(indices, adata.n_obs)
        if groupby is not None:
            if groupby not in adata.obs:
                raise KeyError(f"groupby={groupby!r} is not a column of adata.obs.")
            n_missing = int(adata.obs[groupby].isna().sum())
            if n_missing:
                raise ValueError(
                    f"adata.obs[{groupby!r}] (groupby) has {n_missing} missing values, whose "
                    "cells would be dropped from the averages; fill them or drop those cells "
                    "first."
                )
        samples, obs_names, genes = self._decode_expression(
            adata,
            indices,
            EXPRESSION_KINDS,
            gene_list=gene_list,
            library_size=library_size,
            batch_size=batch_size,
        )
        effect = pd.DataFrame(
            samples["full"][0] - samples["background"][0], index=obs_names, columns=genes
        )
        if groupby is None:
            return effect
        groups = adata.obs[groupby].to_numpy()
        if indices is not None:
            groups = groups[np.asarray(indices)]
        return effect.groupby(groups, sort=False).mean()
