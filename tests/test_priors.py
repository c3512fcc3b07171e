"""Math of the salient priors: densities, KL divergences and the sparse graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch.distributions import Normal

from compvi.module._priors import (
    ConditionalPrior,
    MixturePrior,
    SparsePrior,
    StandardNormalPrior,
    make_salient_prior,
)


def _gaussian_kl(mu_q, sd_q, mu_p, sd_p):
    """KL(N(mu_q, sd_q²) || N(mu_p, sd_p²)) summed over dimensions, written out by hand."""
    return float(
        np.sum(np.log(sd_p / sd_q) + (sd_q**2 + (mu_q - mu_p) ** 2) / (2 * sd_p**2) - 0.5)
    )


def test_standard_normal_kl_matches_the_closed_form():
    mu, sd = np.array([[0.5, -1.0]]), np.array([[0.8, 1.5]])
    qs = Normal(torch.tensor(mu), torch.tensor(sd))
    value = StandardNormalPrior().kl(qs, qs.loc, torch.zeros(1, 1)).item()
    assert value == pytest.approx(_gaussian_kl(mu, sd, 0.0, 1.0), rel=1e-6)


# ------------------------------------------------------------------ mixture
def _mixture(weights, means, scales) -> MixturePrior:
    prior = MixturePrior(n_latent=means.shape[1], n_components=means.shape[0]).double()
    with torch.no_grad():
        prior.weight_logits.copy_(torch.log(torch.tensor(weights)))
        prior.means.copy_(torch.tensor(means))
        prior.log_scales.copy_(torch.log(torch.tensor(scales)))
    return prior


MIX_WEIGHTS = np.array([0.2, 0.5, 0.3])
MIX_MEANS = np.array([[0.0, 1.0], [2.0, -1.0], [-1.5, 0.5]])
MIX_SCALES = np.array([[1.0, 0.5], [0.3, 2.0], [1.2, 0.8]])


def test_mixture_log_density_and_responsibilities_match_scipy():
    prior = _mixture(MIX_WEIGHTS, MIX_MEANS, MIX_SCALES)
    z = np.array([[0.1, 0.2], [1.9, -3.0], [-2.0, 0.0]])
    joint = np.stack(
        [
            w * multivariate_normal(m, np.diag(s**2)).pdf(z)
            for w, m, s in zip(MIX_WEIGHTS, MIX_MEANS, MIX_SCALES, strict=True)
        ],
        axis=1,
    )
    log_prob = prior.log_prob(torch.tensor(z)).detach().numpy()
    np.testing.assert_allclose(log_prob, np.log(joint.sum(1)), rtol=1e-10)
    responsibilities = prior.responsibilities(torch.tensor(z)).detach().numpy()
    np.testing.assert_allclose(responsibilities, joint / joint.sum(1, keepdims=True), rtol=1e-8)
    np.testing.assert_allclose(prior.scales().detach().numpy(), MIX_SCALES)


def test_mixture_kl_estimate_is_unbiased_for_a_single_effective_component():
    # All components equal: the mixture is one Gaussian, so the one-sample estimate must
    # average to the closed-form KL.
    means = np.array([[1.0, -0.5]] * 3)
    scales = np.array([[0.7, 1.3]] * 3)
    prior = _mixture(MIX_WEIGHTS, means, scales)
    mu, sd = np.array([0.2, 0.4]), np.array([0.5, 0.9])
    qs = Normal(torch.tensor(mu).expand(200_000, 2), torch.tensor(sd).expand(200_000, 2))
    torch.manual_seed(0)
    estimate = prior.kl(qs, qs.rsample(), torch.zeros(200_000, 1)).mean().item()
    assert estimate == pytest.approx(_gaussian_kl(mu, sd, means[0], scales[0]), abs=0.01)


def test_mixture_kl_is_larger_away_from_the_components():
    prior = _mixture(MIX_WEIGHTS, MIX_MEANS, MIX_SCALES)
    torch.manual_seed(0)
    near = Normal(torch.tensor([[2.0, -1.0]]).expand(5000, 2), torch.full((5000, 2), 0.3))
    far = Normal(torch.tensor([[8.0, 8.0]]).expand(5000, 2), torch.full((5000, 2), 0.3))
    kl_near = prior.kl(near, near.rsample(), torch.zeros(5000, 1)).mean().item()
    kl_far = prior.kl(far, far.rsample(), torch.zeros(5000, 1)).mean().item()
    assert 0 < kl_near < 3 < kl_far


def test_mixture_components_start_apart():
    prior = MixturePrior(n_latent=3, n_components=4)
    assert torch.cdist(prior.means, prior.means).fill_diagonal_(np.inf).min() > 0


# -------------------------------------------------------------- conditional
def test_conditional_kl_uses_each_cells_condition():
    prior = ConditionalPrior(n_latent=2, n_conditions=3).double()
    means = np.array([[0.0, 0.0], [1.0, -2.0], [3.0, 0.5]])
    scales = np.array([[1.0, 1.0], [0.5, 2.0], [1.5, 0.2]])
    with torch.no_grad():
        prior.means.copy_(torch.tensor(means))
        prior.log_scales.copy_(torch.log(torch.tensor(scales)))
    mu = np.array([[0.3, -1.0], [0.3, -1.0]])
    sd = np.array([[0.4, 0.9], [0.4, 0.9]])
    condition = torch.tensor([[1], [2]])
    values = prior.kl(Normal(torch.tensor(mu), torch.tensor(sd)), None, condition)
    expected = [_gaussian_kl(mu[i], sd[i], means[c], scales[c]) for i, c in enumerate([1, 2])]
    np.testing.assert_allclose(values.detach().numpy(), expected, rtol=1e-10)
    # The posterior equal to its condition's prior has KL 0.
    exact = Normal(torch.tensor(means[[1]]), torch.tensor(scales[[1]]))
    assert prior.kl(exact, None, torch.tensor([[1]])).item() == pytest.approx(0.0, abs=1e-12)


def test_conditional_prior_starts_as_the_standard_normal():
    prior = ConditionalPrior(n_latent=3, n_conditions=4)
    qs = Normal(torch.randn(5, 3), torch.rand(5, 3) + 0.5)
    condition = torch.tensor([0, 1, 2, 3, 1])
    torch.testing.assert_close(
        prior.kl(qs, None, condition), StandardNormalPrior().kl(qs, None, condition)
    )


def test_learned_scales_are_bounded():
    prior = ConditionalPrior(n_latent=1, n_conditions=1)
    with torch.no_grad():
        prior.log_scales.fill_(-50.0)
    assert prior.distribution(torch.tensor([0])).scale.item() == pytest.approx(np.exp(-4.0))


# ------------------------------------------------------------------- sparse
def _sparse(shifts, log_scales, base_log_scales, logits) -> SparsePrior:
    prior = SparsePrior(
        n_latent=shifts.shape[1], n_conditions=shifts.shape[0], perturbed_codes=[1, 2]
    ).double()
    with torch.no_grad():
        prior.shifts.copy_(torch.tensor(shifts))
        prior.log_scales.copy_(torch.tensor(log_scales))
        prior.base_log_scales.copy_(torch.tensor(base_log_scales))
        prior.edge_logits.copy_(torch.tensor(logits))
    return prior


SHIFTS = np.array([[9.0, 9.0, 9.0], [2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
LOG_SCALES = np.log(np.array([[1.0, 1.0, 1.0], [0.5, 2.0, 1.0], [1.0, 0.3, 1.5]]))
BASE = np.log(np.array([0.8, 1.2, 0.6]))
# Code 0 is the control; perturbation 1 acts on factor 0, perturbation 2 on factors 1 and 2.
LOGITS = np.array([[5.0, 5.0, 5.0], [4.0, -4.0, -3.0], [-6.0, 2.0, 3.0]])
GRAPH = np.array([[1, 0, 0], [0, 1, 1]])


def test_sparse_kl_in_evaluation_uses_the_hard_graph():
    prior = _sparse(SHIFTS, LOG_SCALES, BASE, LOGITS).eval()
    mu, sd = np.array([[1.0, 0.5, -1.0]] * 2), np.array([[0.6, 0.7, 0.8]] * 2)
    values = prior.kl(Normal(torch.tensor(mu), torch.tensor(sd)), None, torch.tensor([[1], [2]]))
    expected = []
    for row, code in enumerate([1, 2]):
        edges = GRAPH[code - 1]
        mean = edges * SHIFTS[code]
        scale = np.exp(edges * LOG_SCALES[code] + (1 - edges) * BASE)
        expected.append(_gaussian_kl(mu[row], sd[row], mean, scale))
    np.testing.assert_allclose(values.detach().numpy(), expected, rtol=1e-10)


def test_sparse_graph_probabilities_expected_edges_and_measures():
    prior = _sparse(SHIFTS, LOG_SCALES, BASE, LOGITS)
    probabilities = 1 / (1 + np.exp(-LOGITS[1:]))
    np.testing.assert_allclose(prior.edge_probabilities().detach().numpy(), probabilities)
    expected_edges = probabilities.sum(1).mean()
    assert prior.expected_edges().item() == pytest.approx(expected_edges)
    assert prior.measures()["edges"].item() == pytest.approx(expected_edges)
    # The control row (all logits 5) is not part of the graph.
    assert prior.expected_edges().item() < 2


def test_gumbel_sigmoid_mask_is_relaxed_and_has_the_edge_probabilities():
    logits = np.array([[0.0, 0.0], [1.5, -0.5], [-2.0, 3.0]])
    prior = _sparse(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(2), logits).train()
    torch.manual_seed(0)
    masks = torch.stack([prior.mask() for _ in range(20_000)]).detach().numpy()
    assert ((masks > 0) & (masks < 1)).all()
    # P(sigmoid((a + logistic noise) / t) > 1/2) = P(noise > -a) = sigmoid(a), any t.
    np.testing.assert_allclose((masks > 0.5).mean(0), 1 / (1 + np.exp(-logits)), atol=0.01)
    prior.temperature = 0.05
    sharp = torch.stack([prior.mask() for _ in range(2000)]).detach().numpy()
    assert np.mean((sharp < 0.01) | (sharp > 0.99)) > 0.9


def test_sparse_gradients_reach_the_graph_and_shifts():
    prior = _sparse(SHIFTS, LOG_SCALES, BASE, LOGITS).train()
    qs = Normal(torch.tensor([[1.0, 0.5, -1.0]], dtype=torch.float64), torch.ones(1, 3).double())
    prior.kl(qs, None, torch.tensor([[2]])).sum().backward()
    assert prior.edge_logits.grad[2].abs().min() > 0
    assert prior.edge_logits.grad[[0, 1]].abs().max() == 0
    assert prior.shifts.grad[2].abs().sum() > 0


# ------------------------------------------------------------------ factory
def test_factory_builds_each_prior_and_rejects_bad_input():
    common = {"n_latent": 3, "n_conditions": 4, "control_codes": [0], "mask_temperature": 0.5}
    assert isinstance(make_salient_prior("normal", n_components=2, **common), StandardNormalPrior)
    assert isinstance(make_salient_prior("mixture", n_components=2, **common), MixturePrior)
    assert isinstance(
        make_salient_prior("conditional", n_components=2, **common), ConditionalPrior
    )
    sparse = make_salient_prior("sparse", n_components=2, **common)
    assert sparse.perturbed_codes.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="n_prior_components >= 2"):
        make_salient_prior("mixture", n_components=1, **common)
    with pytest.raises(ValueError, match="is not one of"):
        make_salient_prior("laplace", n_components=2, **common)
    with pytest.raises(ValueError, match="at least one perturbation"):
        make_salient_prior(
            "conditional", n_components=2, **{**common, "control_codes": [0, 1, 2, 3]}
        )
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make_salient_prior("sparse", n_components=2, **{**common, "mask_temperature": 0})
