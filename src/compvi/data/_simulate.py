"""Simulated perturbation screens with known background and salient latents."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import sparse

from ._checks import (
    check_graph,
    check_positive_int,
    check_positive_real,
    check_scale_range,
    check_strengths,
)

MIXINGS = ("leaky_relu", "linear", "tanh")
_SALIENT_DISTRIBUTIONS = ("gaussian", "mixture")

_CONTROL = "control"
# Norm of each perturbation's salient mean; large enough that perturbations separate from
# one another, small enough that the shift does not swamp the within-perturbation spread.
_SALIENT_MEAN_NORM = 1.5
# Magnitude range of a mean on an edge of the salient graph: bounded away from 0, so that
# every edge shifts its factor visibly.
_GRAPH_MEAN_RANGE = (1.0, 2.0)
# Norm of each mixture component's mean; larger than _SALIENT_MEAN_NORM because the
# components, unlike the perturbations, are unlabelled and must separate on their own.
_COMPONENT_MEAN_NORM = 2.0
_LEAKY_SLOPE = 0.2
_GENE_BASELINE_STD = 1.0
_BATCH_OFFSET_STD = 0.3
_LIBRARY_LOG_STD = 0.3


def simulate_screen(
    n_cells: int = 2000,
    n_genes: int = 200,
    *,
    n_perturbations: int = 3,
    n_background_latent: int = 4,
    n_salient_latent: int = 4,
    control_fraction: float = 0.3,
    perturbation_strength: float | Sequence[float] = 1.0,
    mixing: Literal["leaky_relu", "linear", "tanh"] = "leaky_relu",
    n_hidden: int = 32,
    n_batches: int = 1,
    mean_library_size: float = 2000.0,
    dispersion: float = 5.0,
    salient_scale_range: tuple[float, float] = (0.5, 1.5),
    salient_graph: ArrayLike | None = None,
    salient_distribution: Literal["gaussian", "mixture"] = "gaussian",
    n_salient_components: int = 4,
    seed: int = 0,
) -> ad.AnnData:
    r"""Simulate a perturbation screen from a comparative generative model with known latents.

    Every cell carries a background latent :math:`z_b \sim N(0, I)`. Control cells have a
    salient latent :math:`z_s = 0`; a cell hit by perturbation :math:`k` has
    :math:`z_s = a_k (m_k + s_k \odot \varepsilon)` with :math:`\varepsilon \sim N(0, I)`,
    a random mean :math:`m_k` of norm 1.5, per-dimension scales :math:`s_k` drawn uniformly
    from ``salient_scale_range`` (so the salient distribution over perturbed cells is full
    rank) and the strength :math:`a_k`. Two options match the salient distribution to the
    structured priors of :class:`~compvi.ComparativeVI`:

    - ``salient_graph`` makes the effects sparse (mechanism sparsity): perturbation
      :math:`k` moves only the factors :math:`j` it has an edge to, with
      :math:`z_{s,j} = a_k (m_{kj} + s_{kj} \varepsilon_j)` on edges and :math:`z_{s,j} = 0`
      exactly off them. On edges :math:`m_{kj}` has a random sign and a magnitude drawn
      uniformly from [1, 2], so that every edge shifts its factor.
    - ``salient_distribution="mixture"`` draws the salient latent of perturbed cells from a
      Gaussian mixture with diagonal covariances shared by all perturbations,
      :math:`z_s = a_k (\mu_c + \sigma_c \odot \varepsilon)`, where a cell's component
      :math:`c` is drawn from perturbation :math:`k`'s own weights :math:`\pi_k \sim
      \mathrm{Dirichlet}(1, \dots, 1)`, so the label tells something, but not all, about
      the component. The means :math:`\mu_c` are random with norm 2 and the scales
      :math:`\sigma_c` are drawn per component and dimension uniformly from
      ``salient_scale_range``: scales that differ between components along each axis are
      what lets a diagonal-mixture prior identify the axes.

    A random mixing :math:`f` maps :math:`[z_b, z_s]` to gene logits,
    standardised per gene to unit standard deviation across cells, plus a random per-gene
    baseline and, with several batches, a per-batch per-gene offset. Counts are drawn as
    :math:`x \sim NB(\ell \, \mathrm{softmax}(f(z)), \theta)` with library size
    :math:`\ell \sim \mathrm{LogNormal}` and inverse dispersion :math:`\theta`.

    The ``"leaky_relu"`` and ``"linear"`` mixings are piece-wise affine, the setting in
    which comparative VAEs are identifiable block-wise; ``"tanh"`` is smooth and serves as a
    negative control for identifiability claims.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_genes
        Number of genes.
    n_perturbations
        Number of perturbations, named ``"P1"``, ``"P2"``, ...
    n_background_latent
        Dimension of the background latent :math:`z_b`.
    n_salient_latent
        Dimension of the salient latent :math:`z_s`.
    control_fraction
        Fraction of control cells, in the open interval (0, 1). The remaining cells are
        split as evenly as possible over the perturbations.
    perturbation_strength
        Non-negative multiplier :math:`a_k` of the salient latent, either one value for all
        perturbations or one value per perturbation. A strength of 0 makes a null
        perturbation whose cells carry :math:`z_s = 0`, exactly like controls.
    mixing
        Map from latents to gene logits: ``"leaky_relu"`` (a random two-layer MLP with a
        LeakyReLU(0.2) hidden layer), ``"linear"`` (a random affine map) or ``"tanh"``
        (the same MLP with a tanh hidden layer).
    n_hidden
        Width of the hidden layer of the ``"leaky_relu"`` and ``"tanh"`` mixings.
    n_batches
        Number of batches. With more than one, cells are assigned to batches uniformly at
        random, independently of their condition.
    mean_library_size
        Mean of the log-normal library size :math:`\ell` (log-scale standard deviation 0.3).
    dispersion
        Inverse dispersion :math:`\theta` of the negative binomial, shared by all genes;
        larger values are closer to Poisson.
    salient_scale_range
        ``(low, high)`` with ``0 < low <= high``: the range of the per-perturbation
        scales :math:`s_k`, or of the components' scales :math:`\sigma_c` for
        ``salient_distribution="mixture"``. A wide range makes the perturbations (or
        components) differ in their variances, which a conditional prior needs.
    salient_graph
        Binary perturbation -> salient factor graph, ``(n_perturbations,
        n_salient_latent)``, rows in the order ``"P1"``, ``"P2"``, ... An entry 1 lets the
        perturbation move the factor. A row of zeros makes a null perturbation and a column
        of zeros a factor that stays 0 on every cell. ``None`` lets every perturbation move
        every factor.
    salient_distribution
        ``"gaussian"`` (one Gaussian per perturbation) or ``"mixture"`` (a Gaussian mixture
        with ``n_salient_components`` components shared by the perturbations). The mixture
        cannot be combined with ``salient_graph``.
    n_salient_components
        Number of mixture components; used only with ``salient_distribution="mixture"``.
    seed
        Seed of the random number generator. The latents, the mixing, the batch
        assignment and the counts use independent streams derived from it, so changing
        for instance ``mixing`` or ``n_batches`` leaves the latents unchanged. The
        conditions and the background latent are also the same whatever the salient
        options, and ``salient_graph`` keeps the scales, noise and signs of the means that
        the default Gaussian draws.

    Returns
    -------
    Simulated screen with counts in ``X`` (CSR, float32, integer-valued) and

    ``obs["condition"]``
        Categorical with categories ``["control", "P1", ...]``.
    ``obs["batch"]``
        Categorical ``"batch_0"``, ... (only when ``n_batches > 1``).
    ``obs["library_size"]``
        Observed total counts per cell.
    ``obsm["true_background"]``
        True background latent, ``(n_cells, n_background_latent)``, float32.
    ``obsm["true_salient"]``
        True salient latent, ``(n_cells, n_salient_latent)``, float32; zero on control
        cells and on cells of null perturbations, and off the edges of ``salient_graph``.
    ``obs["true_component"]``
        Mixture component of each cell's salient latent, an integer in
        ``0, ..., n_salient_components - 1``, or -1 on control cells and on cells of null
        perturbations, whose salient latent is 0 (only for
        ``salient_distribution="mixture"``).
    ``uns["simulation"]``
        The simulation parameters; with ``salient_graph`` also ``"salient_graph"`` (list of
        rows of 0/1 integers), and for the mixture also ``"component_means"`` and
        ``"component_scales"`` (``n_salient_components`` rows of ``n_salient_latent``
        values, before the strength) and ``"component_weights"`` (one row of
        ``n_salient_components`` weights per perturbation).

    Examples
    --------
    >>> from compvi.data import simulate_screen
    >>> adata = simulate_screen(1000, 100, n_perturbations=2, perturbation_strength=[1.0, 0.0])
    >>> adata.obs["condition"].cat.categories.tolist()
    ['control', 'P1', 'P2']
    >>> bool((adata.obsm["true_salient"][adata.obs["condition"] == "P2"] == 0).all())
    True

    """
    for name, value in (
        ("n_cells", n_cells),
        ("n_genes", n_genes),
        ("n_perturbations", n_perturbations),
        ("n_background_latent", n_background_latent),
        ("n_salient_latent", n_salient_latent),
        ("n_hidden", n_hidden),
        ("n_batches", n_batches),
        ("n_salient_components", n_salient_components),
    ):
        check_positive_int(value, name)
    if not (isinstance(control_fraction, Real) and 0 < control_fraction < 1):
        raise ValueError(
            f"control_fraction must be a number strictly between 0 and 1, "
            f"got {control_fraction!r}; e.g. control_fraction=0.3."
        )
    strengths = check_strengths(perturbation_strength, n_perturbations)
    if mixing not in MIXINGS:
        raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}.")
    check_positive_real(mean_library_size, "mean_library_size")
    check_positive_real(dispersion, "dispersion")
    scale_range = check_scale_range(salient_scale_range)
    if salient_distribution not in _SALIENT_DISTRIBUTIONS:
        raise ValueError(
            f"salient_distribution must be one of {_SALIENT_DISTRIBUTIONS}, "
            f"got {salient_distribution!r}."
        )
    graph = None
    if salient_graph is not None:
        if salient_distribution == "mixture":
            raise ValueError(
                "salient_graph cannot be combined with salient_distribution='mixture': the "
                "graph sets which factors each perturbation's Gaussian moves. Pass "
                "salient_graph=None for the mixture, or salient_distribution='gaussian'."
            )
        graph = check_graph(salient_graph, n_perturbations, n_salient_latent)
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")

    n_control = round(control_fraction * n_cells)
    n_perturbed = n_cells - n_control
    if n_control < 1 or n_perturbed < n_perturbations:
        raise ValueError(
            f"n_cells={n_cells} is too small for control_fraction={control_fraction} and "
            f"n_perturbations={n_perturbations}: it gives {n_control} control and "
            f"{n_perturbed} perturbed cells, but at least one control cell and one cell per "
            "perturbation are needed. Increase n_cells."
        )

    # Independent streams, so that e.g. switching the mixing keeps the same latents.
    rng_latent, rng_mixing, rng_batch, rng_counts = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )

    names = [_CONTROL, *(f"P{k + 1}" for k in range(n_perturbations))]
    # Codes: 0 for control, k for perturbation k; perturbed cells split as evenly as possible.
    per_perturbation = np.full(n_perturbations, n_perturbed // n_perturbations)
    per_perturbation[: n_perturbed % n_perturbations] += 1
    codes = rng_latent.permutation(
        np.repeat(np.arange(n_perturbations + 1), [n_control, *per_perturbation])
    )

    z_background = rng_latent.standard_normal((n_cells, n_background_latent))
    salient_parameters: dict[str, Any] = {}
    if salient_distribution == "mixture":
        z_salient, component, salient_parameters = _mixture_salient(
            codes,
            strengths,
            n_salient_latent=n_salient_latent,
            n_components=n_salient_components,
            scale_range=scale_range,
            rng=rng_latent,
        )
    else:
        z_salient = _gaussian_salient(
            codes,
            strengths,
            n_salient_latent=n_salient_latent,
            scale_range=scale_range,
            graph=graph,
            rng=rng_latent,
        )
        if graph is not None:
            salient_parameters["salient_graph"] = graph.tolist()

    logits = _mix(
        z_background, z_salient, n_genes=n_genes, mixing=mixing, n_hidden=n_hidden, rng=rng_mixing
    )
    # Unit per-gene spread across cells keeps counts informative whatever the latent sizes;
    # being a per-gene affine map, it preserves the piece-wise affine structure.
    logits = (logits - logits.mean(axis=0)) / logits.std(axis=0)
    logits += _GENE_BASELINE_STD * rng_mixing.standard_normal(n_genes)

    obs = pd.DataFrame(
        {"condition": pd.Categorical.from_codes(codes, categories=names)},
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    if n_batches > 1:
        batch = rng_batch.integers(n_batches, size=n_cells)
        logits += _BATCH_OFFSET_STD * rng_batch.standard_normal((n_batches, n_genes))[batch]
        obs["batch"] = pd.Categorical.from_codes(
            batch, categories=[f"batch_{b}" for b in range(n_batches)]
        )

    rho = np.exp(logits - logits.max(axis=1, keepdims=True))
    rho /= rho.sum(axis=1, keepdims=True)
    # Shift the log-mean so that mean_library_size is the mean, not the median.
    library = rng_counts.lognormal(
        np.log(mean_library_size) - _LIBRARY_LOG_STD**2 / 2, _LIBRARY_LOG_STD, size=n_cells
    )
    mu = library[:, None] * rho
    # Gamma-Poisson mixture: NB with mean mu and inverse dispersion theta.
    counts = rng_counts.poisson(rng_counts.gamma(dispersion, mu / dispersion))
    obs["library_size"] = counts.sum(axis=1).astype(np.float64)
    if salient_distribution == "mixture":
        obs["true_component"] = component

    adata = ad.AnnData(
        X=sparse.csr_matrix(counts.astype(np.float32)),
        obs=obs,
        var=pd.DataFrame(index=pd.Index([f"gene_{g}" for g in range(n_genes)])),
    )
    adata.obsm["true_background"] = z_background.astype(np.float32)
    adata.obsm["true_salient"] = z_salient.astype(np.float32)
    adata.uns["simulation"] = {
        "n_cells": int(n_cells),
        "n_genes": int(n_genes),
        "n_perturbations": int(n_perturbations),
        "n_background_latent": int(n_background_latent),
        "n_salient_latent": int(n_salient_latent),
        "control_fraction": float(control_fraction),
        "perturbation_strength": strengths.tolist(),
        "mixing": mixing,
        "n_hidden": int(n_hidden),
        "n_batches": int(n_batches),
        "mean_library_size": float(mean_library_size),
        "dispersion": float(dispersion),
        "salient_scale_range": list(scale_range),
        "salient_distribution": salient_distribution,
        **salient_parameters,
        "seed": int(seed),
    }
    return adata


def _gaussian_salient(
    codes: np.ndarray,
    strengths: np.ndarray,
    *,
    n_salient_latent: int,
    scale_range: tuple[float, float],
    graph: np.ndarray | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Salient latent with one Gaussian per perturbation, restricted to the graph's edges."""
    n_perturbations = len(strengths)
    means = rng.standard_normal((n_perturbations, n_salient_latent))
    means *= _SALIENT_MEAN_NORM / np.linalg.norm(means, axis=1, keepdims=True)
    scales = rng.uniform(*scale_range, size=(n_perturbations, n_salient_latent))
    eps = rng.standard_normal((len(codes), n_salient_latent))
    if graph is not None:
        # Drawn after the default draws so that a graph keeps their scales and noise; the
        # sign of a Gaussian draw is a fair coin, so the default means supply the signs.
        means = np.sign(means) * rng.uniform(*_GRAPH_MEAN_RANGE, size=means.shape)
    z_salient = np.zeros((len(codes), n_salient_latent))
    perturbed = codes > 0
    k = codes[perturbed] - 1
    shifted = strengths[k, None] * (means[k] + scales[k] * eps[perturbed])
    if graph is not None:
        # np.where rather than a product with the graph, which would leave -0.0 off edges.
        shifted = np.where(graph[k] == 1, shifted, 0.0)
    z_salient[perturbed] = shifted
    return z_salient


def _mixture_salient(
    codes: np.ndarray,
    strengths: np.ndarray,
    *,
    n_salient_latent: int,
    n_components: int,
    scale_range: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Salient latent from a diagonal Gaussian mixture with per-perturbation weights.

    Returns the latent, each cell's component (-1 where the latent is 0) and the mixture's
    parameters for ``uns["simulation"]``.
    """
    means = rng.standard_normal((n_components, n_salient_latent))
    means *= _COMPONENT_MEAN_NORM / np.linalg.norm(means, axis=1, keepdims=True)
    scales = rng.uniform(*scale_range, size=(n_components, n_salient_latent))
    weights = rng.dirichlet(np.ones(n_components), size=len(strengths))
    perturbed = codes > 0
    k = codes[perturbed] - 1
    # Inverse-CDF draw from each cell's perturbation's weights; the minimum guards against
    # a cumulative sum that rounds to just below 1.
    cumulative = weights.cumsum(axis=1)[k]
    drawn = np.minimum((rng.random(len(k))[:, None] >= cumulative).sum(axis=1), n_components - 1)
    eps = rng.standard_normal((len(k), n_salient_latent))
    z_salient = np.zeros((len(codes), n_salient_latent))
    z_salient[perturbed] = strengths[k, None] * (means[drawn] + scales[drawn] * eps)
    component = np.full(len(codes), -1)
    component[perturbed] = np.where(strengths[k] > 0, drawn, -1)
    parameters = {
        "n_salient_components": int(n_components),
        "component_means": means.tolist(),
        "component_scales": scales.tolist(),
        "component_weights": weights.tolist(),
    }
    return z_salient, component, parameters


def _mix(
    z_background: np.ndarray,
    z_salient: np.ndarray,
    *,
    n_genes: int,
    mixing: str,
    n_hidden: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Map the latents to raw (unstandardised) gene logits with a random network."""
    # Scaling each block's input weights by 1 / sqrt(block size) gives both blocks a
    # comparable share of every unit's input, whatever n_background_latent / n_salient_latent.
    n_units = n_genes if mixing == "linear" else n_hidden
    w_in = np.concatenate(
        [
            rng.standard_normal((z.shape[1], n_units)) / np.sqrt(z.shape[1])
            for z in (z_background, z_salient)
        ]
    )
    h = np.hstack([z_background, z_salient]) @ w_in
    if mixing == "linear":
        return h
    # Biases of the order of the pre-activation spread put the kinks inside the data cloud.
    h += rng.standard_normal(n_hidden)
    h = np.where(h > 0, h, _LEAKY_SLOPE * h) if mixing == "leaky_relu" else np.tanh(h)
    return h @ rng.standard_normal((n_hidden, n_genes))
