from __future__ import annotations

import math

import pytest
import torch

from compvi._constants import CONSTRAINTS
from compvi.train._constraints import MAX_MULTIPLIER, MIN_MULTIPLIER, Constraint
from compvi.train._training_plan import _scalar_metrics


def test_multiplier_grows_by_the_clipped_relative_violation_of_the_running_mean():
    constraint = Constraint(CONSTRAINTS.LEAKAGE, bound=0.1, lr=0.5, multiplier=0.01)
    constraint.step(torch.tensor(0.15))  # the first measure starts the running mean
    assert constraint.running.item() == pytest.approx(0.15)
    assert constraint.value.item() == pytest.approx(0.01 * math.exp(0.5 * 0.5))
    constraint.step(torch.tensor(5.0))  # running mean 0.635: far over, clipped at 1
    assert constraint.running.item() == pytest.approx(0.9 * 0.15 + 0.1 * 5.0)
    assert constraint.value.item() == pytest.approx(0.01 * math.exp(0.25 + 0.5))
    # One quiet minibatch does not undo a violation the running mean still shows.
    constraint.step(torch.tensor(0.0))
    assert constraint.value.item() > 0.01 * math.exp(0.75)
    for _ in range(300):
        constraint.step(torch.tensor(0.0))
    assert constraint.running.item() < 1e-6
    assert constraint.value.item() == pytest.approx(MIN_MULTIPLIER)


def test_a_step_moves_the_multiplier_by_its_share_of_an_epoch():
    whole, quarter = (Constraint(CONSTRAINTS.LEAKAGE, 0.1, lr=0.5, multiplier=0.01) for _ in "ab")
    whole.step(torch.tensor(0.3))
    for _ in range(4):
        quarter.step(torch.tensor(0.3), share=0.25)
    # Both violated by more than one bound (clipped at 1): one epoch's factor e^0.5 each.
    assert whole.value.item() == pytest.approx(0.01 * math.exp(0.5))
    assert quarter.value.item() == pytest.approx(whole.value.item())


def test_spiky_measures_violated_on_average_raise_the_multiplier():
    # One minibatch in five far over the bound, the rest at 0: violated by 60% on average.
    # Clipping each step's violation would average -0.6 and let the multiplier fall.
    constraint = Constraint(CONSTRAINTS.DEPENDENCE, bound=0.005, lr=0.05)
    measures = [0.04 if step % 5 == 0 else 0.0 for step in range(400)]
    assert sum(measures) / len(measures) == pytest.approx(1.6 * 0.005)
    for measure in measures:
        constraint.step(torch.tensor(measure))
    assert constraint.value.item() > 1e3 * MIN_MULTIPLIER


def test_a_long_violation_does_not_wind_the_multiplier_up():
    # 500 steps far over the bound would take an unbounded multiplier to e^25 above its floor.
    constraint = Constraint(CONSTRAINTS.LEAKAGE, bound=0.02, lr=0.05)
    for _ in range(500):
        constraint.step(torch.tensor(0.9))
    assert constraint.value.item() == pytest.approx(MAX_MULTIPLIER)
    # So it unwinds within about a hundred steps once the bound holds (the running mean
    # takes some 35 of them to fall below the bound), not over several epochs.
    for _ in range(120):
        constraint.step(torch.tensor(0.0))
    assert constraint.value.item() < 0.05 * MAX_MULTIPLIER
    assert Constraint(CONSTRAINTS.LEAKAGE, 0.1, 0.1, multiplier=1e6).value.item() == (
        pytest.approx(MAX_MULTIPLIER)
    )


def test_penalty_is_the_relative_lagrangian_term_in_units_of_the_objective():
    constraint = Constraint(CONSTRAINTS.DEPENDENCE, bound=0.25, lr=1.0, multiplier=0.5)
    measure = torch.tensor(0.5, requires_grad=True)
    penalty = constraint.penalty(measure, scale=torch.tensor(10.0))
    assert penalty.item() == pytest.approx(0.5 * (0.5 / 0.25 - 1) * 10)
    constraint.step(measure)  # an in-place update must not break the pending backward
    penalty.backward()
    assert measure.grad.item() == pytest.approx(0.5 * 10 / 0.25)


def test_multiplier_starts_at_the_floor_or_where_it_is_told():
    assert Constraint(CONSTRAINTS.EDGES, 2.0, 0.1).value.item() == pytest.approx(MIN_MULTIPLIER)
    assert Constraint(CONSTRAINTS.EDGES, 2.0, 0.1, multiplier=0.3).value.item() == (
        pytest.approx(0.3)
    )


def test_multiplier_is_a_buffer_not_a_parameter():
    constraint = Constraint(CONSTRAINTS.LEAKAGE, bound=0.1, lr=1.0)
    assert list(constraint.parameters()) == []
    assert "value" in constraint.state_dict()


@pytest.mark.parametrize(
    ("name", "bound", "lr", "match"),
    [
        (CONSTRAINTS.LEAKAGE, 0.0, 1.0, "leakage_bound must be > 0"),
        (CONSTRAINTS.BACKGROUND_SHIFT, -1.0, 1.0, "background_shift_bound must be > 0"),
        (CONSTRAINTS.LEAKAGE, 0.1, 0.0, "multiplier_lr must be > 0"),
        ("smoothness", 0.1, 1.0, "Unknown constraint"),
    ],
)
def test_bad_arguments(name, bound, lr, match):
    with pytest.raises(ValueError, match=match):
        Constraint(name, bound=bound, lr=lr)


def test_a_family_bounds_each_group_with_its_own_multiplier():
    nan = float("nan")
    family = Constraint(CONSTRAINTS.BACKGROUND_SHIFT, bound=0.1, lr=0.5, n_groups=4)
    assert family.value.shape == (4,)
    # Group 0 (controls) is never measured; 1 is far over its bound, 2 holds; 3 is unseen.
    family.step(torch.tensor([nan, 0.5, 0.0, nan]))
    torch.testing.assert_close(family.running[1:3], torch.tensor([0.5, 0.0]))
    assert family.running[[0, 3]].isnan().all()
    expected = [MIN_MULTIPLIER, MIN_MULTIPLIER * math.exp(0.5), MIN_MULTIPLIER, MIN_MULTIPLIER]
    torch.testing.assert_close(family.value, torch.tensor(expected))
    # A step that does not measure group 1 keeps its running mean and its multiplier.
    family.step(torch.tensor([nan, nan, 0.0, 0.3]))
    assert family.running[1].item() == pytest.approx(0.5)
    assert family.value[1].item() == pytest.approx(MIN_MULTIPLIER * math.exp(0.5))
    assert family.value[3].item() == pytest.approx(MIN_MULTIPLIER * math.exp(0.5))
    # Group 1 steps again, from its kept running mean, once a step measures it.
    family.step(torch.tensor([nan, 0.5, nan, nan]))
    assert family.value[1].item() == pytest.approx(MIN_MULTIPLIER * math.exp(1.0))


def test_a_rarely_measured_group_steps_only_when_measured_at_the_common_pace():
    nan = float("nan")
    family = Constraint(CONSTRAINTS.BACKGROUND_SHIFT, bound=0.01, lr=1.0, n_groups=2)
    # Both far over the bound for ten epochs of 100 steps; group 1 is measured once an epoch.
    gains = []
    for step in range(1000):
        before = family.value[1].item()
        family.step(torch.tensor([1.0, 1.0 if step % 100 == 0 else nan]), share=0.01)
        gains.append(math.log(family.value[1].item() / before))
    # Group 0, measured every step, moves e^lr per epoch, exactly.
    assert family.value[0].item() == pytest.approx(MIN_MULTIPLIER * math.exp(10.0), rel=1e-4)
    torch.testing.assert_close(family.frequency[0], torch.tensor(1.0), rtol=0, atol=0)
    # Group 1 moves only in the steps that measure it ...
    assert all(gain == 0.0 for step, gain in enumerate(gains) if step % 100)
    # ... at the first, by one step's share (the frequency estimate starts at 1) ...
    assert gains[0] == pytest.approx(0.01, rel=1e-4)
    # ... then, once the frequency estimate has come down from 1 (a few epochs), by most of
    # the pace per epoch of a group measured every step, not the 100 times slower pace of
    # one step's share an epoch (0.1 in all).
    assert 0.5 < gains[900] <= 1.0
    assert 3.0 < math.log(family.value[1].item() / MIN_MULTIPLIER) < 10.0


def test_a_family_penalizes_the_mean_over_measured_groups():
    family = Constraint(
        CONSTRAINTS.BACKGROUND_SHIFT, bound=0.1, lr=1.0, multiplier=[1.0, 2.0, 4.0], n_groups=3
    )
    measure = torch.tensor([float("nan"), 0.3, 0.05], requires_grad=True)
    penalty = family.penalty(measure, scale=torch.tensor(10.0))
    assert penalty.item() == pytest.approx((2.0 * 2.0 + 4.0 * -0.5) / 2 * 10)
    assert family.weight(measure).item() == pytest.approx(3.0)
    penalty.backward()
    torch.testing.assert_close(measure.grad, torch.tensor([0.0, 100.0, 200.0]))
    # One group reads as a scalar constraint.
    single = Constraint(CONSTRAINTS.BACKGROUND_SHIFT, 0.1, 1.0, multiplier=2.0, n_groups=1)
    scalar = Constraint(CONSTRAINTS.BACKGROUND_SHIFT, 0.1, 1.0, multiplier=2.0)
    assert single.penalty(torch.tensor([0.3])).item() == scalar.penalty(torch.tensor(0.3)).item()
    # Nothing measured: no penalty and no weight.
    assert family.penalty(torch.full((3,), float("nan"))).item() == 0.0
    assert family.weight(torch.full((3,), float("nan"))).item() == 0.0


def test_a_family_starts_from_one_multiplier_for_all_or_one_per_group():
    shared = Constraint(CONSTRAINTS.BACKGROUND_SHIFT, 0.1, 1.0, multiplier=0.3, n_groups=3)
    torch.testing.assert_close(shared.value, torch.full((3,), 0.3))
    with pytest.raises(ValueError, match="2 starting multipliers given, expected 3 numbers"):
        Constraint(CONSTRAINTS.BACKGROUND_SHIFT, 0.1, 1.0, multiplier=[0.1, 0.2], n_groups=3)
    with pytest.raises(ValueError, match="1 starting multipliers given, expected a single"):
        Constraint(CONSTRAINTS.LEAKAGE, 0.1, 1.0, multiplier=[0.3])


def test_logged_metrics_average_the_measured_groups_and_skip_steps_that_measure_none():
    nan = float("nan")
    metrics = {
        "leakage": torch.tensor(0.2),
        "background_shift": torch.tensor([nan, 0.1, 0.3]),
    }
    logged = _scalar_metrics(metrics)
    assert logged["leakage"].item() == pytest.approx(0.2)
    assert logged["background_shift"].item() == pytest.approx(0.2)
    # A step that measured no perturbation logs nothing, rather than a 0 the epoch mean
    # would count.
    assert "background_shift" not in _scalar_metrics({"background_shift": torch.full((3,), nan)})


def test_at_ceiling_names_only_measured_groups_whose_multiplier_is_at_the_ceiling():
    nan = float("nan")
    family = Constraint(
        CONSTRAINTS.BACKGROUND_SHIFT, 0.1, 1.0, multiplier=MAX_MULTIPLIER, n_groups=3
    )
    # Group 0 is never measured; group 1 stays violated, group 2 holds with slack.
    family.step(torch.tensor([nan, 1.0, 0.0]), share=0.5)
    assert family.at_ceiling().tolist() == [False, True, False]
