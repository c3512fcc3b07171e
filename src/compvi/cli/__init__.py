"""The ``compvi`` command line: ``compvi demo`` and ``compvi fit``."""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
