"""Helpers shared by the plots of :mod:`compvi.pl`."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def _finish(fig: Figure, show: bool | None, save: str | Path | None) -> None:
    """Save and show ``fig`` as scanpy does: show unless saved, when ``show`` is ``None``."""
    if save is not None:
        fig.savefig(save, bbox_inches="tight")
    if show or (show is None and save is None):
        plt.show()
