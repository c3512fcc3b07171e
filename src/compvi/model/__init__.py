"""The user API: :class:`ComparativeVI` and the scores it writes."""

from __future__ import annotations

from ._comparativevi import ComparativeVI
from ._perturbation_scores import PerturbationScores

__all__ = ["ComparativeVI", "PerturbationScores"]
