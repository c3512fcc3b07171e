"""The state every part of :class:`~compvi.ComparativeVI` reads: conditions and genes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scvi.data import AnnDataManager
from scvi.model.base import BaseModelClass

from .._constants import (
    REGISTRY_KEYS,
)
from . import _validation


class ComparativeModelBase(BaseModelClass):
    """The registered conditions and genes, which every part of the model reads.

    :class:`~compvi.ComparativeVI` is assembled from parts, one per responsibility
    (registration, training, expression, differential expression, scores, prior outputs);
    each part subclasses this base, so what it needs from the model is stated here.
    """

    @property
    def control_categories(self) -> list[str]:
        """Labels of the registered condition that mean "control"."""
        return list(self.adata_manager.registry["setup_args"]["control_category"])

    @property
    def conditions(self) -> list[str]:
        """All labels of the registered condition, in code order."""
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.CONDITION_KEY)
        return [str(c) for c in mapping.categorical_mapping]

    def _control_codes(self) -> list[int]:
        return [i for i, c in enumerate(self.conditions) if c in self.control_categories]

    def _gene_names(self, adata: AnnData | MuData) -> pd.Index:
        """Genes of the modelled counts: ``var_names`` of the RNA modality for a MuData."""
        setup_args = self.adata_manager.registry["setup_args"]
        return _validation.registered_counts(adata, setup_args)[0].var_names

    def _registered_obs(self, adata: AnnData | MuData, argument: str) -> pd.DataFrame:
        """Return the obs frame a setup argument's column is read from (a modality's)."""
        setup_args = self.adata_manager.registry["setup_args"]
        return _validation.registered_obs(adata, setup_args, argument).obs

    def _is_perturbed(self, adata_manager: AnnDataManager) -> np.ndarray:
        codes = np.asarray(adata_manager.get_from_registry(REGISTRY_KEYS.CONDITION_KEY))
        return ~np.isin(codes.ravel(), self._control_codes())
