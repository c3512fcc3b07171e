"""Plots of ComparativeVI models and results."""

from __future__ import annotations

from ._embeddings import embeddings
from ._graph import perturbation_graph
from ._salient import perturbation_clustermap, salient_heatmap
from ._training import training_diagnostics

__all__ = [
    "embeddings",
    "perturbation_clustermap",
    "perturbation_graph",
    "salient_heatmap",
    "training_diagnostics",
]
