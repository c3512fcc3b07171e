from __future__ import annotations

import numpy as np
import pytest
import torch

from compvi.train._mgda import gradient_products, min_norm_weight, min_norm_weight_of_products
from compvi.train._training_plan import _flat_gradient


def _brute_force(g1, g2):
    alphas = np.linspace(0, 1, 100_001)
    norms = [np.linalg.norm(a * g1 + (1 - a) * g2) for a in alphas]
    return alphas[int(np.argmin(norms))]


@pytest.mark.parametrize(
    ("g1", "g2", "expected"),
    [
        ([1.0, 0.0], [0.0, 1.0], 0.5),  # orthogonal, equal norms: midpoint
        ([1.0, 0.0], [2.0, 0.0], 1.0),  # aligned: all weight on the smaller gradient
        ([3.0, 0.0], [1.0, 0.0], 0.0),
        ([1.0, 1.0], [1.0, 1.0], 0.5),  # identical: split evenly
        ([2.0, 0.0], [0.0, 1.0], 0.2),  # (g2-g1).g2 / |g1-g2|^2 = 1 / 5
    ],
)
def test_closed_form_on_toy_pairs(g1, g2, expected):
    alpha = min_norm_weight(torch.tensor(g1), torch.tensor(g2))
    assert alpha.item() == pytest.approx(expected, abs=1e-6)


def test_matches_brute_force_and_stays_in_unit_interval():
    rng = np.random.default_rng(0)
    for _ in range(20):
        g1, g2 = rng.normal(size=(2, 7)) * rng.uniform(0.1, 10, size=(2, 1))
        alpha = min_norm_weight(torch.tensor(g1), torch.tensor(g2)).item()
        assert 0.0 <= alpha <= 1.0
        assert alpha == pytest.approx(_brute_force(g1, g2), abs=2e-5)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        min_norm_weight(torch.ones(3), torch.ones(4))


def test_weight_of_products_is_the_weight_of_the_gradients():
    rng = np.random.default_rng(1)
    g1, g2 = (torch.tensor(g) for g in rng.normal(size=(2, 6)))
    products = gradient_products(g1, g2)
    torch.testing.assert_close(products, torch.stack([g1 @ g1, g2 @ g2, g1 @ g2]))
    torch.testing.assert_close(min_norm_weight_of_products(products), min_norm_weight(g1, g2))


def test_flat_gradient_matches_backward_and_fills_unused_parameters_with_zeros():
    torch.manual_seed(0)
    used, unused = torch.nn.Linear(4, 3), torch.nn.Linear(4, 2)
    loss = used(torch.randn(5, 4)).pow(2).sum()
    parameters = [*used.parameters(), *unused.parameters()]
    flat = _flat_gradient(loss, parameters)
    loss.backward()
    expected = torch.cat([used.weight.grad.reshape(-1), used.bias.grad, torch.zeros(10)])
    torch.testing.assert_close(flat, expected)
