"""Named simulated settings for identifiability benchmarks."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from anndata import AnnData

from ._simulate import simulate_screen

# Perturbation -> factor graph of "sparse_screen". Every perturbation moves one or two
# factors, every factor is moved by at least two perturbations and no two rows are equal.
# s4 and s5 are never moved alone, but for every factor the perturbations that move it
# share no other factor (s4: P6 and P7, s5: P7 and P8), the graphical criterion under which
# mechanism sparsity disentangles the factors (Lachapelle et al.).
_SPARSE_SCREEN_GRAPH = (
    # s1 s2 s3 s4 s5
    (1, 0, 0, 0, 0),  # P1
    (0, 1, 0, 0, 0),  # P2
    (0, 0, 1, 0, 0),  # P3
    (1, 1, 0, 0, 0),  # P4
    (0, 1, 1, 0, 0),  # P5
    (0, 0, 1, 1, 0),  # P6
    (0, 0, 0, 1, 1),  # P7
    (1, 0, 0, 0, 1),  # P8
)


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

    @property
    def n_background_latent(self) -> int:
        """Dimension of the setting's true background latent."""
        return self._argument("n_background_latent")

    @property
    def n_salient_latent(self) -> int:
        """Dimension of the setting's true salient latent."""
        return self._argument("n_salient_latent")

    def _argument(self, name: str) -> Any:
        """Return this setting's :func:`simulate_screen` argument ``name``, or its default."""
        if name in self.simulation:
            return self.simulation[name]
        return inspect.signature(simulate_screen).parameters[name].default


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
        Setting(
            "mixture_screen",
            "Leaky-ReLU mixing, three perturbations drawing the 4 salient latents from one "
            "4-component diagonal Gaussian mixture with their own weights: the case of the "
            "mixture prior (Kivva et al., 2022).",
            True,
            {
                "mixing": "leaky_relu",
                "n_background_latent": 4,
                "n_salient_latent": 4,
                "n_perturbations": 3,
                "salient_distribution": "mixture",
                "n_salient_components": 4,
                # Scales below 1 keep the components (means of norm 2) about 95% separable,
                # and a threefold range makes each axis's scale differ between components.
                "salient_scale_range": (0.3, 1.0),
            },
        ),
        Setting(
            "conditional_screen",
            "Leaky-ReLU mixing, ten perturbations whose 4 salient latents have "
            "per-perturbation scales drawn from [0.3, 2.0]: the case of the conditional "
            "prior (iVAE, Khemakhem et al., 2020).",
            True,
            {
                "mixing": "leaky_relu",
                "n_background_latent": 4,
                "n_salient_latent": 4,
                # iVAE needs at least 2d + 1 conditions whose variances vary.
                "n_perturbations": 10,
                "salient_scale_range": (0.3, 2.0),
            },
        ),
        Setting(
            "sparse_screen",
            "Leaky-ReLU mixing, eight perturbations each moving one or two of 5 salient "
            "latents along a fixed graph: the case of the sparse prior (mechanism sparsity, "
            "Lachapelle et al.).",
            True,
            {
                "mixing": "leaky_relu",
                "n_background_latent": 4,
                "n_salient_latent": 5,
                "n_perturbations": 8,
                "salient_graph": _SPARSE_SCREEN_GRAPH,
            },
        ),
    )
}


def simulate_setting(
    name: str, *, n_cells: int = 2000, n_genes: int = 200, seed: int = 0
) -> AnnData:
    """Simulate the named setting of :data:`SETTINGS`.

    The latent dimensions are the setting's: 4 background latents everywhere, and 4 salient
    latents except 5 for ``"sparse_screen"``; :attr:`Setting.n_background_latent` and
    :attr:`Setting.n_salient_latent` give them.

    Parameters
    ----------
    name
        One of ``"linear"``, ``"piecewise_affine"``, ``"smooth"``, ``"graded_screen"``,
        ``"mixture_screen"``, ``"conditional_screen"``, ``"sparse_screen"``.
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
