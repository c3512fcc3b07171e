"""Pure-torch layers: the comparative VAE, its networks and salient priors."""

from __future__ import annotations

from ._vae import ComparativeVAE

__all__ = ["ComparativeVAE"]
