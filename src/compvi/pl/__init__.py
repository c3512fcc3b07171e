"""Plots of ComparativeVI models and results."""

from __future__ import annotations

from ._training import training_diagnostics

__all__ = ["training_diagnostics"]
