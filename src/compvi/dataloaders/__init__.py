"""Data loading: paired control/perturbed minibatches and the train/validation split."""

from __future__ import annotations

from ._paired import PairedDataLoader
from ._splitter import ComparativeDataSplitter

__all__ = ["ComparativeDataSplitter", "PairedDataLoader"]
