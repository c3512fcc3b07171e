"""Registry keys and names shared by the model, module and training plan."""

from __future__ import annotations

from typing import NamedTuple

from scvi import REGISTRY_KEYS as SCVI_REGISTRY_KEYS


class _RegistryKeys(NamedTuple):
    X_KEY: str = SCVI_REGISTRY_KEYS.X_KEY
    BATCH_KEY: str = SCVI_REGISTRY_KEYS.BATCH_KEY
    CONDITION_KEY: str = "condition"
    SIZE_FACTOR_KEY: str = SCVI_REGISTRY_KEYS.SIZE_FACTOR_KEY
    CAT_COVS_KEY: str = SCVI_REGISTRY_KEYS.CAT_COVS_KEY
    CONT_COVS_KEY: str = SCVI_REGISTRY_KEYS.CONT_COVS_KEY


class _DataSources(NamedTuple):
    CONTROL: str = "control"
    PERTURBED: str = "perturbed"


REGISTRY_KEYS = _RegistryKeys()
DATA_SOURCES = _DataSources()

BALANCING_MODES = ("mgda", "sum")
GENE_LIKELIHOODS = ("nb", "zinb", "poisson")
PRIORS = ("normal", "mixture", "conditional", "sparse")
REPRESENTATION_KINDS = ("salient", "background")
EXPRESSION_KINDS = ("full", "background")
DE_REFERENCES = ("counterfactual", "control")
DE_MODES = ("change", "vanilla")
