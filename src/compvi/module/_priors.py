"""Priors of the salient latent of perturbed cells: normal, mixture, conditional and sparse.

Each prior returns, per cell, the KL divergence of the salient posterior from it; the
module masks it to perturbed cells. Controls decode with :math:`z_s = 0` and never use it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import torch
from torch.distributions import Normal
from torch.distributions import kl_divergence as kl

from .._constants import CONSTRAINTS, PRIORS

# Learned log standard deviations stay within [e^-4, e^4] ≈ [0.018, 55]: a prior that
# collapses to a point makes its KL, and the gradients, unbounded.
_LOG_SCALE_BOUNDS = (-4.0, 4.0)
_LOG_2PI = math.log(2 * math.pi)


def _bounded(log_scale: torch.Tensor) -> torch.Tensor:
    return log_scale.clamp(*_LOG_SCALE_BOUNDS)


class FittedLaws(NamedTuple):
    """A fitted prior's Gaussian laws, one row each, for users to read."""

    #: Means, shape ``(rows, d_s)``.
    means: torch.Tensor
    #: Standard deviations, shape ``(rows, d_s)``.
    scales: torch.Tensor
    #: Mixture weights, shape ``(rows,)``, when the rows are mixture components; ``None``
    #: when they are the condition codes asked for.
    weights: torch.Tensor | None = None


class SalientPrior(torch.nn.Module, ABC):
    r"""A prior :math:`p(z_s \mid c)` of the salient latent given the cell's condition code.

    The contract the module, the training plan and the model read: :meth:`kl` for the
    objective, :attr:`constraint_names` and :meth:`measures` for the constraints training
    may put on the prior's parameters, :meth:`fitted_laws` for the parameter table, and
    the prior's own parameters (its optimizer group).
    """

    #: Names (from :data:`~compvi._constants.CONSTRAINTS`) of the measures :meth:`measures`
    #: returns.
    constraint_names: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def kl(self, qs: Normal, s: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """KL divergence of each cell's salient posterior from the prior, shape ``(cells,)``.

        Parameters
        ----------
        qs
            Salient posterior, batch shape ``(cells, d_s)``.
        s
            A reparameterized sample of ``qs`` (priors without a closed-form KL use it).
        condition
            Registered condition code of each cell, shape ``(cells, 1)`` or ``(cells,)``.

        """

    def measures(self) -> dict[str, torch.Tensor]:
        """Quantities of the prior's parameters that training may constrain (none here)."""
        return {}

    def fitted_laws(self, codes: torch.Tensor) -> FittedLaws | None:
        """Return the learned laws per code in ``codes`` or per component; ``None`` if fixed."""
        return None


class StandardNormalPrior(SalientPrior):
    r""":math:`z_s \sim N(0, I)` for every perturbed cell, as in contrastiveVI."""

    def kl(self, qs: Normal, s: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Closed-form KL from the standard normal, per cell."""
        return kl(qs, Normal(torch.zeros_like(qs.loc), torch.ones_like(qs.scale))).sum(-1)


class MixturePrior(SalientPrior):
    r"""A learnable Gaussian mixture with diagonal covariances (Kivva et al., 2022).

    :math:`p(z_s) = \sum_k \pi_k N(z_s; m_k, \mathrm{diag}\,\sigma_k^2)`, shared by all
    perturbations. The KL has no closed form; it is the posterior's negative entropy (exact)
    minus :math:`\log p(s)` at the posterior sample :math:`s` (a one-sample estimate).

    Parameters
    ----------
    n_latent
        Dimension of the salient latent.
    n_components
        Number of mixture components.

    """

    def __init__(self, n_latent: int, n_components: int) -> None:
        super().__init__()
        self.weight_logits = torch.nn.Parameter(torch.zeros(n_components))
        # Random means: components that start identical receive identical gradients and
        # never separate.
        self.means = torch.nn.Parameter(torch.randn(n_components, n_latent))
        self.log_scales = torch.nn.Parameter(torch.zeros(n_components, n_latent))

    def scales(self) -> torch.Tensor:
        """Return the standard deviation of each component along each factor, ``(K, d_s)``."""
        return _bounded(self.log_scales).exp()

    def component_log_joint(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log \pi_k + \log N(z; m_k, \sigma_k^2)` for each component, ``(..., K)``."""
        log_scales = _bounded(self.log_scales)
        standardized = (z.unsqueeze(-2) - self.means) / log_scales.exp()
        log_density = -0.5 * (standardized.pow(2) + _LOG_2PI) - log_scales
        return torch.log_softmax(self.weight_logits, -1) + log_density.sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the mixture at ``z``, shape ``z.shape[:-1]``."""
        return torch.logsumexp(self.component_log_joint(z), dim=-1)

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        """Posterior probability of each component given ``z``, shape ``(..., K)``."""
        return torch.softmax(self.component_log_joint(z), dim=-1)

    def fitted_laws(self, codes: torch.Tensor) -> FittedLaws:
        """Return the components' laws and weights (shared by all codes)."""
        return FittedLaws(self.means, self.scales(), torch.softmax(self.weight_logits, -1))

    def kl(self, qs: Normal, s: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Exact negative entropy minus the mixture's log-density at the sample, per cell."""
        return -qs.entropy().sum(-1) - self.log_prob(s)


class ConditionalPrior(SalientPrior):
    r"""A factorized Gaussian per condition (iVAE, Khemakhem et al., 2020).

    :math:`p(z_s \mid c) = N(m_c, \mathrm{diag}\,\sigma_c^2)` with a learned mean and scale
    per condition code; the KL is in closed form. Rows of control codes are never used.

    Parameters
    ----------
    n_latent
        Dimension of the salient latent.
    n_conditions
        Number of registered conditions (controls included).

    """

    def __init__(self, n_latent: int, n_conditions: int) -> None:
        super().__init__()
        self.means = torch.nn.Parameter(torch.zeros(n_conditions, n_latent))
        self.log_scales = torch.nn.Parameter(torch.zeros(n_conditions, n_latent))

    def distribution(self, condition: torch.Tensor) -> Normal:
        """Return the prior of each cell given its condition code."""
        codes = condition.reshape(-1).long()
        return Normal(self.means[codes], _bounded(self.log_scales[codes]).exp())

    def fitted_laws(self, codes: torch.Tensor) -> FittedLaws:
        """Return the law of each condition code in ``codes``."""
        law = self.distribution(codes)
        return FittedLaws(law.loc, law.scale)

    def kl(self, qs: Normal, s: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Closed-form KL from each cell's condition prior, per cell."""
        return kl(qs, self.distribution(condition)).sum(-1)


class SparsePrior(SalientPrior):
    r"""Per-perturbation shifts of a few salient factors, gated by a learned graph.

    Mechanism sparsity (Lachapelle et al.): factor :math:`j` of a cell of perturbation
    :math:`c` follows

    .. math::

        z_{s,j} \sim N\bigl(M_{cj} m_{cj},\ \exp(M_{cj} \gamma_{cj} + (1 - M_{cj})\gamma_j)^2\bigr)

    where :math:`M_{cj} \in \{0, 1\}` says whether perturbation :math:`c` acts on factor
    :math:`j`. Without an edge the factor keeps its perturbation-independent base
    distribution :math:`N(0, e^{2\gamma_j})`. During training :math:`M` is a Gumbel-sigmoid
    relaxation of Bernoulli variables with probabilities :math:`\sigma(\alpha_{cj})`, one
    draw per step shared by the cells of the minibatch; in evaluation it is the hard graph
    :math:`\sigma(\alpha_{cj}) > 1/2`. The expected number of edges per perturbation,
    :meth:`expected_edges`, is what training bounds.

    Parameters
    ----------
    n_latent
        Dimension of the salient latent.
    n_conditions
        Number of registered conditions (controls included).
    perturbed_codes
        Condition codes of the perturbations; the graph has one row per code.
    temperature
        Temperature of the Gumbel-sigmoid relaxation; lower is closer to binary.

    """

    def __init__(
        self,
        n_latent: int,
        n_conditions: int,
        perturbed_codes: list[int],
        temperature: float = 0.5,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"The mask temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        self.register_buffer("perturbed_codes", torch.as_tensor(perturbed_codes).long())
        self.shifts = torch.nn.Parameter(torch.zeros(n_conditions, n_latent))
        self.log_scales = torch.nn.Parameter(torch.zeros(n_conditions, n_latent))
        self.base_log_scales = torch.nn.Parameter(torch.zeros(n_latent))
        self.edge_logits = torch.nn.Parameter(torch.zeros(n_conditions, n_latent))

    def edge_probabilities(self) -> torch.Tensor:
        """Probability of each perturbation → factor edge, ``(n_perturbations, d_s)``."""
        return torch.sigmoid(self.edge_logits[self.perturbed_codes])

    def expected_edges(self) -> torch.Tensor:
        """Return the expected number of edges per perturbation (mean row sum of probabilities)."""
        return self.edge_probabilities().sum(-1).mean()

    def hard_graph(self) -> torch.Tensor:
        """Return the graph over all condition codes: 1 where the edge probability > 1/2."""
        return (self.edge_logits > 0).to(self.edge_logits.dtype)

    def mask(self) -> torch.Tensor:
        """Relaxed (training) or hard (evaluation) graph over all condition codes."""
        if not self.training:
            return self.hard_graph()
        uniform = torch.rand_like(self.edge_logits).clamp(1e-6, 1 - 1e-6)
        logistic_noise = torch.log(uniform) - torch.log1p(-uniform)
        return torch.sigmoid((self.edge_logits + logistic_noise) / self.temperature)

    def parameters_given(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior means and log-scales of every condition code under a graph ``mask``."""
        means = mask * self.shifts
        log_scales = mask * self.log_scales + (1 - mask) * self.base_log_scales
        return means, _bounded(log_scales)

    def fitted_laws(self, codes: torch.Tensor) -> FittedLaws:
        """Each perturbation's law under the hard graph (factors without an edge: mean 0)."""
        means, log_scales = self.parameters_given(self.hard_graph())
        return FittedLaws(means[codes], log_scales[codes].exp())

    def kl(self, qs: Normal, s: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Closed-form KL from each cell's prior under one draw of the graph, per cell."""
        codes = condition.reshape(-1).long()
        means, log_scales = self.parameters_given(self.mask())
        return kl(qs, Normal(means[codes], log_scales[codes].exp())).sum(-1)

    constraint_names = (CONSTRAINTS.EDGES,)

    def measures(self) -> dict[str, torch.Tensor]:
        """Return the expected number of edges per perturbation, under ``"edges"``."""
        return {CONSTRAINTS.EDGES: self.expected_edges()}


def make_salient_prior(
    prior: str,
    *,
    n_latent: int,
    n_conditions: int,
    control_codes: list[int],
    n_components: int,
    mask_temperature: float,
) -> SalientPrior:
    """Build the salient prior named ``prior`` (one of :data:`~compvi._constants.PRIORS`)."""
    if prior == "normal":
        return StandardNormalPrior()
    if prior == "mixture":
        if n_components < 2:
            raise ValueError(
                f"The mixture prior needs n_prior_components >= 2, got {n_components}; a "
                'single component is prior="normal" with a learned mean and scale.'
            )
        return MixturePrior(n_latent, n_components)
    if prior not in PRIORS:
        raise ValueError(f"prior={prior!r} is not one of {PRIORS}.")
    perturbed_codes = [c for c in range(n_conditions) if c not in set(control_codes)]
    if not perturbed_codes:
        raise ValueError(f"prior={prior!r} needs at least one perturbation among the conditions.")
    if prior == "conditional":
        return ConditionalPrior(n_latent, n_conditions)
    return SparsePrior(n_latent, n_conditions, perturbed_codes, mask_temperature)
