from __future__ import annotations

import numpy as np
import pytest
import torch

from compvi._constants import CONSTRAINTS, DEFAULT_BOUNDS
from compvi.module._measures import (
    MIN_SALIENT_ENERGY,
    label_dependence,
    mean_of_measured,
    normalized_hsic,
    rbf_gram,
    relative_leakage,
    space_dependence,
    unbiased_hsic,
    within_label_residuals,
)
from compvi.module._vae import ComparativeVAE


def _t(values):
    return torch.as_tensor(np.asarray(values), dtype=torch.float32)


def label_gram(labels):
    """Delta-kernel Gram matrix of integer labels (1 where two rows share a label)."""
    labels = torch.as_tensor(labels).reshape(-1)
    return (labels[:, None] == labels[None, :]).float()


def _hsic_by_loops(first, second):
    """Song et al. (2012)'s unbiased HSIC written term by term, as an independent reference."""
    n = len(first)
    k, m = first.copy(), second.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(m, 0)
    trace = sum(k[i, j] * m[j, i] for i in range(n) for j in range(n))
    ones = np.ones(n)
    middle = (ones @ k @ ones) * (ones @ m @ ones) / ((n - 1) * (n - 2))
    last = 2 / (n - 2) * ones @ k @ m @ ones
    return (trace + middle - last) / (n * (n - 3))


def test_unbiased_hsic_matches_the_formula_term_by_term():
    rng = np.random.default_rng(0)
    a, b = rng.random((9, 9)), rng.random((9, 9))
    first, second = a + a.T, b + b.T
    value = unbiased_hsic(torch.as_tensor(first), torch.as_tensor(second)).item()
    assert value == pytest.approx(_hsic_by_loops(first, second), rel=1e-10)


def test_rbf_gram_uses_the_median_and_optionally_a_local_length_scale():
    points = _t([[0.0], [1.0], [3.0]])
    squared = np.array([[0, 1, 9], [1, 0, 4], [9, 4, 0]], dtype=float)
    # median of 1, 9, 4 is 4; each row's farthest (2nd) neighbour: 9, 4, 9, mean 22 / 3
    np.testing.assert_allclose(rbf_gram(points).numpy(), np.exp(-squared / 4.0), rtol=1e-6)
    local = 22 / 3
    expected = (np.exp(-squared / 4.0) + np.exp(-squared / local)) / 2
    np.testing.assert_allclose(rbf_gram(points, local=True).numpy(), expected, rtol=1e-6)


def test_the_local_scale_sees_shifts_within_clusters():
    rng = np.random.default_rng(5)
    # Three far-apart clusters; within each, condition 1 is shifted by a fifth of its spread.
    centres = rng.normal(size=(3, 4)) * 30
    cluster = rng.integers(0, 3, 512)
    condition = rng.integers(0, 2, 512)
    points = centres[cluster] + rng.normal(size=(512, 4)) + 0.6 * condition[:, None]
    labels = label_gram(torch.as_tensor(condition))
    local = normalized_hsic(rbf_gram(_t(points), local=True), labels).item()
    assert local > 5 * normalized_hsic(rbf_gram(_t(points)), labels).item()
    # With two groups the measure is the normalized HSIC with the label, up to estimation.
    condition = torch.as_tensor(condition)
    shifts = label_dependence(_t(points), condition > 0, condition, 2)
    assert shifts[0].isnan()  # the controls' own code is not measured
    assert shifts[1].item() == pytest.approx(local, rel=0.1)


def test_normalized_hsic_is_one_for_identical_and_near_zero_for_independent_spaces():
    rng = np.random.default_rng(1)
    b = _t(rng.normal(size=(300, 3)))
    assert normalized_hsic(rbf_gram(b), rbf_gram(b)).item() == pytest.approx(1.0, abs=1e-5)
    s = _t(rng.normal(size=(300, 3)))
    assert abs(normalized_hsic(rbf_gram(b), rbf_gram(s)).item()) < 0.01


def test_space_dependence_sees_nonlinear_and_single_direction_dependence():
    rng = np.random.default_rng(2)
    n = 256
    # 10 + 10 latents of which 4 each are in use, as in a model with surplus dimensions.
    scale = np.r_[np.ones(4), np.full(6, 1e-2)]
    b = rng.normal(size=(n, 10)) * scale
    independent = rng.normal(size=(n, 10)) * scale
    perturbed = torch.ones(n, dtype=torch.bool)
    one_label = torch.ones(n)
    null = space_dependence(_t(b), _t(independent), perturbed, one_label).item()
    squared = independent.copy()
    squared[:, 0] = b[:, 0] ** 2 - 1  # uncorrelated with b, but a function of it
    assert abs(np.corrcoef(b[:, 0], squared[:, 0])[0, 1]) < 0.2
    bent = space_dependence(_t(b), _t(squared), perturbed, one_label).item()
    one_direction = independent.copy()
    one_direction[:, 0] = 0.45 * b[:, 0] + np.sqrt(1 - 0.45**2) * independent[:, 0]
    correlated = space_dependence(_t(b), _t(one_direction), perturbed, one_label).item()
    # The default bound separates both from independence (whose sd is about 0.005 here).
    assert abs(null) < 0.01
    assert min(bent, correlated) > DEFAULT_BOUNDS[CONSTRAINTS.DEPENDENCE]
    # A collapsed coordinate beside active ones barely moves the distances, so a tiny copy
    # of the background there neither counts nor dominates (standardized correlations
    # would score it as a perfect copy).
    tiny_copy = independent.copy()
    tiny_copy[:, 0] = 1e-3 * b[:, 0]
    assert abs(space_dependence(_t(b), _t(tiny_copy), perturbed, one_label).item()) < 0.01
    # Scale-free: a space that is the background, shrunk, is still fully dependent.
    shrunk = space_dependence(_t(b), _t(1e-3 * b), perturbed, one_label).item()
    assert shrunk == pytest.approx(1.0, abs=1e-3)


def test_space_dependence_uses_perturbed_cells_only_and_needs_four():
    rng = np.random.default_rng(3)
    b = rng.normal(size=(200, 4))
    s = rng.normal(size=(200, 4))
    s[:100] = b[:100]  # controls copy the background
    perturbed = torch.tensor([False] * 100 + [True] * 100)
    labels = perturbed.float()
    assert abs(space_dependence(_t(b), _t(s), perturbed, labels).item()) < 0.02
    everyone = torch.ones(200, dtype=torch.bool)
    assert space_dependence(_t(b), _t(s), everyone, torch.ones(200)).item() > 0.2
    few = torch.tensor([True] * 3 + [False] * 197)
    assert space_dependence(_t(b), _t(s), few, labels).item() == 0.0


def test_within_label_residuals_subtract_each_labels_mean():
    values = _t([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [5.0, 5.0]])
    labels = torch.tensor([2.0, 2.0, 7.0, 2.0])
    expected = [[-2.0, 2.0 - 11 / 3], [0.0, 4.0 - 11 / 3], [0.0, 0.0], [2.0, 5.0 - 11 / 3]]
    np.testing.assert_allclose(within_label_residuals(values, labels).numpy(), expected, rtol=1e-6)


def test_space_dependence_reads_dependence_given_the_label():
    rng = np.random.default_rng(4)
    n = 300
    labels = rng.integers(1, 4, size=n)
    b = rng.normal(size=(n, 4))
    perturbed = torch.ones(n, dtype=torch.bool)
    # Each perturbation moves the salient latent its own way, independently of the
    # background: the label explains all the structure, nothing is left to depend on b.
    means = rng.normal(scale=3.0, size=(4, 4))
    shifted = means[labels] + rng.normal(size=(n, 4))
    assert abs(space_dependence(_t(b), _t(shifted), perturbed, _t(labels)).item()) < 0.01
    # A background factor copied into the salient space within every label is seen.
    copied = shifted.copy()
    copied[:, 0] = means[labels, 0] + b[:, 0]
    copy_score = space_dependence(_t(b), _t(copied), perturbed, _t(labels)).item()
    assert copy_score > 10 * DEFAULT_BOUNDS[CONSTRAINTS.DEPENDENCE]


def test_label_dependence_sees_shifts_that_cancel_across_perturbations():
    rng = np.random.default_rng(4)
    n = 300
    condition = torch.as_tensor(np.repeat([0, 1, 2], n // 3))
    b = rng.normal(size=(n, 5))
    null = label_dependence(_t(b), condition > 0, condition, 3)
    shifted = b.copy()
    shifted[condition == 1, 0] += 1.5
    shifted[condition == 2, 0] -= 1.5  # the perturbed cells' pooled mean does not move
    assert shifted[condition > 0, 0].mean() == pytest.approx(b[condition > 0, 0].mean())
    moved = label_dependence(_t(shifted), condition > 0, condition, 3)
    assert null[1:].abs().max().item() < 0.01
    assert moved[1:].min().item() > 0.05


def _mmd_by_loops(kernel, first, second):
    """Unbiased squared MMD between two row sets of a Gram matrix, pair by pair."""
    within_first = [kernel[i, j] for i in first for j in first if i != j]
    within_second = [kernel[i, j] for i in second for j in second if i != j]
    across = [kernel[i, j] for i in first for j in second]
    return np.mean(within_first) + np.mean(within_second) - 2 * np.mean(across)


def test_label_dependence_is_each_perturbations_normalized_mmd():
    rng = np.random.default_rng(6)
    condition = np.array([0] * 12 + [3] * 5 + [5] * 2 + [7] * 1)
    b = rng.normal(size=(len(condition), 3))
    b[condition == 3] += 1.0
    kernel = rbf_gram(_t(b), local=True).double().numpy()
    controls = np.flatnonzero(condition == 0)
    spread = unbiased_hsic(
        torch.as_tensor(kernel[np.ix_(controls, controls)]),
        torch.as_tensor(kernel[np.ix_(controls, controls)]),
    ).item()
    expected = [
        _mmd_by_loops(kernel, np.flatnonzero(condition == g), controls) / (4 * np.sqrt(spread))
        for g in (3, 5)
    ]
    condition = torch.as_tensor(condition)
    shifts = label_dependence(_t(b), condition > 0, condition, 9)
    np.testing.assert_allclose(shifts[[3, 5]].numpy(), expected, rtol=1e-4)
    # The controls, the single cell of perturbation 7 (no pair of its own) and the codes
    # absent from the minibatch are not measured.
    assert shifts[[0, 1, 2, 4, 6, 7, 8]].isnan().all()
    assert mean_of_measured(shifts).item() == pytest.approx(np.mean(expected), rel=1e-4)


def test_label_dependence_weighs_a_small_perturbation_as_a_large_one():
    rng = np.random.default_rng(7)
    # 128 controls, a large knock-out (100 cells) and a small one (6 cells), as a minibatch
    # of a screen whose perturbations differ in size.
    condition = torch.as_tensor(np.repeat([0, 1, 2], [128, 100, 6]))
    perturbed = condition > 0

    def mean_measures(shifted_group: int) -> tuple[float, float]:
        new, pooled = [], []
        for _ in range(40):
            b = rng.normal(size=(len(condition), 6))
            b[condition.numpy() == shifted_group, 0] += 1.5
            new.append(label_dependence(_t(b), perturbed, condition, 3)[shifted_group].item())
            kernel = rbf_gram(_t(b), local=True)
            pooled.append(normalized_hsic(kernel, label_gram(condition)).item())
        return float(np.mean(new)), float(np.mean(pooled))

    large, large_pooled = mean_measures(1)
    small, small_pooled = mean_measures(2)
    # A pooled HSIC barely sees the small knock-out's shift; the per-perturbation measure
    # scores both shifts alike.
    assert small_pooled < 0.1 * large_pooled
    assert small == pytest.approx(large, rel=0.3)
    assert small > 10 * DEFAULT_BOUNDS[CONSTRAINTS.BACKGROUND_SHIFT]


def test_label_dependence_needs_controls_and_a_perturbation_with_two_cells():
    b = _t(np.random.default_rng(8).normal(size=(10, 2)))
    singletons = torch.as_tensor([0] * 6 + [1, 2, 3, 4])
    assert label_dependence(b, singletons > 0, singletons, 5).isnan().all()
    few_controls = torch.as_tensor([0] * 3 + [1] * 7)
    assert label_dependence(b, few_controls > 0, few_controls, 2).isnan().all()
    assert mean_of_measured(label_dependence(b, few_controls > 0, few_controls, 2)) == 0.0


def test_unmeasured_perturbations_send_no_nan_into_the_gradient():
    rng = np.random.default_rng(9)
    condition = torch.as_tensor([0] * 8 + [1] * 4 + [2])
    b = _t(rng.normal(size=(13, 3))).requires_grad_()
    shifts = label_dependence(b, condition > 0, condition, 4)
    assert shifts[[0, 2, 3]].isnan().all() and not shifts[1].isnan()
    mean_of_measured(shifts).backward()
    assert torch.isfinite(b.grad).all() and b.grad.abs().sum() > 0


def test_relative_leakage_is_the_energy_ratio_with_a_constant_reference():
    salient = _t([[1.0, 1.0], [0.0, 2.0], [3.0, 1.0], [1.0, 3.0]]).requires_grad_()
    perturbed = torch.tensor([False, False, True, True])
    # controls: (2 + 4) / 2 = 3; perturbed: (10 + 10) / 2 = 10
    value = relative_leakage(salient, perturbed)
    assert value.item() == pytest.approx(0.3)
    value.backward()
    # Only the controls get a gradient: the reference is held constant.
    assert salient.grad[2:].abs().sum().item() == 0.0
    np.testing.assert_allclose(salient.grad[:2].numpy(), 2 * salient[:2].detach() / 2 / 10)


def test_relative_leakage_of_a_collapsed_space_uses_the_floor():
    salient = _t([[0.1, 0.0], [0.0, 0.0], [0.0, 0.0]])
    perturbed = torch.tensor([False, True, True])
    expected = 0.01 / MIN_SALIENT_ENERGY
    assert relative_leakage(salient, perturbed).item() == pytest.approx(expected)


def test_module_measures_read_posterior_means_without_dropout():
    torch.manual_seed(0)
    module = ComparativeVAE(
        n_input=20, control_codes=[0], n_conditions=2, n_salient_latent=3, dropout_rate=0.5
    )
    module.train()
    x = torch.poisson(torch.full((64, 20), 3.0))
    condition = torch.tensor([0, 1] * 32).reshape(-1, 1)
    outputs = module.inference(
        x=x, batch_index=torch.zeros(64, 1), condition=condition, cat_covs=None, cont_covs=None
    )
    # In training, dropout noise makes the posterior means differ from the clean means ...
    assert not torch.allclose(outputs["qs"].loc, outputs["salient_mean"])
    # ... which equal the means in evaluation mode when batch norm reads the same statistics.
    for layer in module.encoder.trunk:
        layer[-1].eval()
    again = module.inference(
        x=x, batch_index=torch.zeros(64, 1), condition=condition, cat_covs=None, cont_covs=None
    )
    torch.testing.assert_close(again["qs"].loc, outputs["salient_mean"])
    torch.testing.assert_close(again["qz"].loc, outputs["background_mean"])
    measures = module._minibatch_measures(outputs, condition, gather=None)
    assert set(measures) == {
        CONSTRAINTS.LEAKAGE,
        CONSTRAINTS.DEPENDENCE,
        CONSTRAINTS.BACKGROUND_SHIFT,
    }
    expected = relative_leakage(outputs["salient_mean"], condition.reshape(-1) != 0)
    torch.testing.assert_close(measures[CONSTRAINTS.LEAKAGE], expected)
