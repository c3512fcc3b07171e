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
#: The values of ComparativeVI's ``prior`` argument.
PRIORS = ("normal", "mixture", "conditional", "sparse")
REPRESENTATION_KINDS = ("salient", "background")
EXPRESSION_KINDS = ("full", "background")
DE_REFERENCES = ("counterfactual", "control")
DE_MODES = ("change", "vanilla")


class _ConstraintNames(NamedTuple):
    LEAKAGE: str = "leakage"
    DEPENDENCE: str = "dependence"
    BACKGROUND_SHIFT: str = "background_shift"
    EDGES: str = "edges"


#: The constraints' names. Constraint ``name`` is bounded by ``{name}_bound`` in
#: ComparativeVI.train (``edge_bound`` for ``"edges"``), and the model's ``history``
#: holds its curves ``{name}_train``, ``{name}_bound`` and ``{name}_multiplier``.
CONSTRAINTS = _ConstraintNames()

#: The constraints bounded for each perturbation on its own (one multiplier per condition
#: code); the others are single bounds on a minibatch statistic.
PER_CONDITION_CONSTRAINTS = (CONSTRAINTS.BACKGROUND_SHIFT,)

# What each constraint bounds, for error messages and the end-of-training advice.
CONSTRAINT_MEANINGS = {
    CONSTRAINTS.LEAKAGE: "salient energy of control cells relative to perturbed cells",
    CONSTRAINTS.DEPENDENCE: "normalized HSIC between the background and salient spaces",
    CONSTRAINTS.BACKGROUND_SHIFT: (
        "normalized kernel distance between each perturbation's background and the controls'"
    ),
    CONSTRAINTS.EDGES: "expected number of edges per perturbation of the sparse prior",
}

#: Default bounds of ComparativeVI.train, each in its measure's scale-free units (see
#: compvi.module._measures).
DEFAULT_BOUNDS = {
    CONSTRAINTS.LEAKAGE: 0.02,
    CONSTRAINTS.DEPENDENCE: 0.01,
    CONSTRAINTS.BACKGROUND_SHIFT: 0.002,
}
