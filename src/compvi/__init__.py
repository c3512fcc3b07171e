"""Identifiable comparative variational inference for single-cell perturbation screens."""

from __future__ import annotations

from importlib.metadata import version

from . import data, dataloaders, metrics, model, module, pl, tl, train
from .dataloaders import ComparativeDataSplitter
from .model import ComparativeVI, PerturbationScores
from .module import ComparativeVAE
from .train import ComparativeTrainingPlan

__all__ = [
    "ComparativeDataSplitter",
    "ComparativeTrainingPlan",
    "ComparativeVAE",
    "ComparativeVI",
    "PerturbationScores",
    "data",
    "dataloaders",
    "metrics",
    "model",
    "module",
    "pl",
    "tl",
    "train",
]

__version__ = version("compvi")
