"""Metrics of identifiability: block-wise affine recovery, leakage, components and graphs."""

from __future__ import annotations

from ._affine import affine_r2, knn_r2
from ._baselines import log_counts_pca
from ._graph import structural_hamming_distance
from ._leakage import leakage
from ._mcc import match_factors, mcc, random_rotation_floor
from ._stability import seed_stability

__all__ = [
    "affine_r2",
    "knn_r2",
    "leakage",
    "log_counts_pca",
    "match_factors",
    "mcc",
    "random_rotation_floor",
    "seed_stability",
    "structural_hamming_distance",
]
