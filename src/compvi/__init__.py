"""Identifiable comparative variational inference for single-cell perturbation screens."""

from __future__ import annotations

from importlib.metadata import version

from . import data, metrics, pl
from ._model import ComparativeVI

__all__ = ["ComparativeVI", "data", "metrics", "pl"]

__version__ = version("compvi")
