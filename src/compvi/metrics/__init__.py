"""Metrics of identifiability: block-wise affine recovery, leakage and component recovery."""

from __future__ import annotations

from ._affine import affine_r2
from ._leakage import leakage
from ._mcc import mcc, random_rotation_floor

__all__ = ["affine_r2", "leakage", "mcc", "random_rotation_floor"]
