"""Plots of ComparativeVI models and results."""

from __future__ import annotations

from ._embeddings import embeddings
from ._salient import perturbation_clustermap, salient_heatmap
from ._training import training_diagnostics

__all__ = ["embeddings", "perturbation_clustermap", "salient_heatmap", "training_diagnostics"]
