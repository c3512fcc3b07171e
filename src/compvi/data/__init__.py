"""Simulated data with known latents, for checking identifiability claims."""

from __future__ import annotations

from ._simulate import MIXINGS, simulate_screen

__all__ = ["MIXINGS", "simulate_screen"]
