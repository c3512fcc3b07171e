"""Identifiable comparative variational inference for single-cell perturbation screens."""

from __future__ import annotations

from importlib.metadata import version

from . import data, metrics, pl
from ._model import ComparativeVI
from ._perturbation_scores import PerturbationScores

__all__ = ["ComparativeVI", "PerturbationScores", "data", "metrics", "pl"]

__version__ = version("compvi")
