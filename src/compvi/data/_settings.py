"""Named simulated settings for identifiability benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from anndata import AnnData

from ._simulate import simulate_screen


@dataclass(frozen=True)
class Setting:
    """A named simulated screen: what it tests and the :func:`simulate_screen` arguments.

    Attributes
    ----------
    name
        Key in :data:`SETTINGS`.
    description
        What the setting checks.
    piecewise_affine
        Whether the mixing is piece-wise affine, i.e. whether the block-identifiability
        result applies (``False`` marks a negative control).
    simulation
        Keyword arguments of :func:`simulate_screen` (besides sizes and seed).

    """

    name: str
    description: str
    piecewise_affine: bool
    simulation: dict[str, Any] = field(default_factory=dict)


SETTINGS: dict[str, Setting] = {
    setting.name: setting
    for setting in (
        Setting(
            "linear",
            "Linear mixing of 4 background and 4 salient latents: a sanity check.",
            True,
            {"mixing": "linear"},
        ),
        Setting(
            "piecewise_affine",
            "Leaky-ReLU mixing with NB counts: the identifiable case of Lopez et al. (2024).",
            True,
            {"mixing": "leaky_relu"},
        ),
        Setting(
            "smooth",
            "Smooth tanh mixing: outside the theory, a negative control.",
            False,
            {"mixing": "tanh"},
        ),
        Setting(
            "graded_screen",
            "Leaky-ReLU mixing, six perturbations of strengths 2, 1.5, 1, 0.5 and two nulls.",
            True,
            {
                "mixing": "leaky_relu",
                "n_perturbations": 6,
                "perturbation_strength": [2.0, 1.5, 1.0, 0.5, 0.0, 0.0],
            },
        ),
    )
}


def simulate_setting(
    name: str, *, n_cells: int = 2000, n_genes: int = 200, seed: int = 0
) -> AnnData:
    """Simulate the named setting of :data:`SETTINGS` (4 background + 4 salient latents).

    Parameters
    ----------
    name
        One of ``"linear"``, ``"piecewise_affine"``, ``"smooth"``, ``"graded_screen"``.
    n_cells, n_genes
        Size of the screen.
    seed
        Random seed of :func:`simulate_screen`.

    Returns
    -------
    The simulated screen, with ``uns["simulation"]["setting"]`` set to ``name``.

    """
    if name not in SETTINGS:
        raise ValueError(f"Unknown setting {name!r}; choose one of {sorted(SETTINGS)}.")
    adata = simulate_screen(
        n_cells=n_cells, n_genes=n_genes, seed=seed, **SETTINGS[name].simulation
    )
    adata.uns["simulation"]["setting"] = name
    return adata
