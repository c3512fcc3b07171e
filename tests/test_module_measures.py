from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from compvi._module import ComparativeVAE


def _posterior(loc, scale=0.1):
    loc = torch.as_tensor(loc, dtype=torch.float32)
    return Normal(loc, torch.full_like(loc, scale))


def _means(values):
    return torch.as_tensor(values, dtype=torch.float32)


def test_leakage_is_mean_squared_salient_mean_of_controls_per_dimension():
    module = ComparativeVAE(n_input=5, control_codes=[0], n_salient_latent=2)
    qs = _posterior([[1.0, 1.0], [0.0, 2.0], [5.0, 5.0]], scale=0.5)
    perturbed = torch.tensor([False, False, True])
    # controls: (1 + 1) / 2 = 1 and (0 + 4) / 2 = 2; the perturbed cell does not count.
    assert module.leakage(qs, perturbed).item() == pytest.approx((1.0 + 2.0) / 2)
    # The posterior spread of controls does not count either.
    wide = _posterior([[1.0, 1.0], [0.0, 2.0], [5.0, 5.0]], scale=3.0)
    assert module.leakage(wide, perturbed).item() == pytest.approx(1.5)


def test_dependence_matches_adjusted_squared_correlations_by_hand():
    rng = np.random.default_rng(0)
    n = 200
    b = rng.normal(size=(n, 2))
    s = np.column_stack([0.8 * b[:, 0] + 0.6 * rng.normal(size=n), rng.normal(size=n)])
    r = np.corrcoef(np.column_stack([b, s]).T)[:2, 2:]
    adjusted = 1 - (1 - r**2) * (n - 1) / (n - 2)
    perturbed = torch.ones(n, dtype=torch.bool)
    value = ComparativeVAE.dependence(_means(b), _means(s), perturbed)
    assert value.item() == pytest.approx(adjusted.mean(), abs=1e-4)


def test_dependence_is_near_zero_for_independent_spaces_and_uses_perturbed_cells_only():
    rng = np.random.default_rng(1)
    b, s = rng.normal(size=(500, 4)), rng.normal(size=(500, 4))
    perturbed = torch.ones(500, dtype=torch.bool)
    independent = ComparativeVAE.dependence(_means(b), _means(s), perturbed)
    assert abs(independent.item()) < 0.005
    # controls that copy the background into the salient space do not count
    s_with_copies = s.copy()
    s_with_copies[:250] = b[:250]
    only_half = perturbed.clone()
    only_half[:250] = False
    value = ComparativeVAE.dependence(_means(b), _means(s_with_copies), only_half)
    assert abs(value.item()) < 0.01
    copied = ComparativeVAE.dependence(_means(b), _means(s_with_copies), perturbed)
    assert copied.item() > 0.05


def test_dependence_of_too_few_cells_is_zero():
    value = ComparativeVAE.dependence(
        _means(np.ones((2, 3))), _means(np.ones((2, 3))), torch.ones(2, dtype=torch.bool)
    )
    assert value.item() == 0.0


def test_background_shift_matches_a_hand_computation():
    rng = np.random.default_rng(2)
    control = rng.normal(size=(60, 3))
    perturbed_cells = rng.normal(size=(40, 3)) + np.array([0.5, 0, 0])
    b = np.vstack([control, perturbed_cells])
    perturbed = torch.tensor([False] * 60 + [True] * 40)
    pooled = (59 * control.var(0, ddof=1) + 39 * perturbed_cells.var(0, ddof=1)) / 98
    squared = (perturbed_cells.mean(0) - control.mean(0)) ** 2 / pooled
    expected = (squared - (1 / 60 + 1 / 40)).mean()
    value = ComparativeVAE.background_shift(_means(b), perturbed)
    assert value.item() == pytest.approx(expected, abs=1e-5)


def test_background_shift_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(3)
    b = rng.normal(size=(4000, 5))
    perturbed = torch.as_tensor(rng.random(4000) < 0.5)
    same = ComparativeVAE.background_shift(_means(b), perturbed)
    assert abs(same.item()) < 0.005
    shifted = b.copy()
    shifted[perturbed.numpy()] += 1.0
    moved = ComparativeVAE.background_shift(_means(shifted), perturbed)
    assert moved.item() == pytest.approx(1.0, rel=0.1)
    few = ComparativeVAE.background_shift(_means(b[:3]), torch.tensor([True, True, False]))
    assert few.item() == 0.0
