"""Simulated data with known latents, for checking identifiability claims."""

from __future__ import annotations

from ._settings import SETTINGS, Setting, simulate_setting
from ._simulate import MIXINGS, simulate_screen

__all__ = ["MIXINGS", "SETTINGS", "Setting", "simulate_screen", "simulate_setting"]
