from __future__ import annotations

import pytest
import torch

from compvi._dual_ascent import DualAscentMultiplier


def test_multiplier_rises_while_violated_and_decays_to_zero():
    multiplier = DualAscentMultiplier(bound=0.1, lr=2.0)
    assert multiplier.value.item() == 0.0
    multiplier.step(torch.tensor(0.6))  # violated by 0.5: 0 + 2 * 0.5
    assert multiplier.value.item() == pytest.approx(1.0)
    multiplier.step(torch.tensor(0.35))  # still violated: 1 + 2 * 0.25
    assert multiplier.value.item() == pytest.approx(1.5)
    multiplier.step(torch.tensor(0.0))  # slack 0.1: 1.5 - 0.2
    assert multiplier.value.item() == pytest.approx(1.3)
    for _ in range(20):
        multiplier.step(torch.tensor(0.0))
    assert multiplier.value.item() == 0.0  # projected onto lambda >= 0


def test_penalty_is_lagrangian_term_with_gradient_on_measure():
    multiplier = DualAscentMultiplier(bound=0.25, lr=1.0)
    multiplier.step(torch.tensor(2.25))  # lambda = 2
    measure = torch.tensor(1.0, requires_grad=True)
    penalty = multiplier.penalty(measure)
    assert penalty.item() == pytest.approx(2 * (1.0 - 0.25))
    multiplier.step(measure)  # an in-place update must not break the pending backward
    penalty.backward()
    assert measure.grad.item() == pytest.approx(2.0)


def test_multiplier_is_a_buffer_not_a_parameter():
    multiplier = DualAscentMultiplier(bound=0.0, lr=1.0)
    assert list(multiplier.parameters()) == []
    assert "value" in multiplier.state_dict()


@pytest.mark.parametrize(("bound", "lr", "match"), [(-0.1, 1.0, "bound"), (0.1, 0.0, "step size")])
def test_bad_arguments(bound, lr, match):
    with pytest.raises(ValueError, match=match):
        DualAscentMultiplier(bound=bound, lr=lr)
