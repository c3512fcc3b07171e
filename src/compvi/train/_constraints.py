"""Dual-ascent multipliers of the constraints on the training objective."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._constants import CONSTRAINT_MEANINGS, CONSTRAINTS
from ..module._measures import mean_of_measured

#: The smallest multiplier, standing in for 0 (a multiplicative step could never leave 0).
#: Against an objective of magnitude 1,000 a constraint at this multiplier moves the
#: objective by 0.001 per bound of violation.
MIN_MULTIPLIER = 1e-6
#: The largest multiplier, at which a violation by one bound weighs a hundred objectives.
#: Beyond that the multiplier only winds up: a larger penalty does not meet the bound
#: sooner, it silences the objective. When the dual step was per training step, multipliers
#: that reached 1e12 within six epochs collapsed both latent spaces on the Papalexi screen.
MAX_MULTIPLIER = 100.0
#: Weight of the past in the running mean of a measure that drives its multiplier, so
#: that about the last 1 / (1 - 0.9) = 10 steps count.
MEASURE_SMOOTHING = 0.9


class Constraint(torch.nn.Module):
    r"""A constraint :math:`R \le \varepsilon` with a Lagrange multiplier :math:`\lambda > 0`.

    The training plan adds :math:`\lambda\,(R / \varepsilon - 1)\,\lvert\bar L\rvert` to the
    objective, where :math:`\bar L` is the current objective (held constant for the
    gradient), so :math:`\lambda` is free of units: :math:`\lambda = 1` makes a constraint
    violated by its own bound weigh as much as the objective. After each step that measures
    it, the multiplier follows exponentiated dual ascent on the relative violation of
    :math:`\bar R`, a running mean of the measure over the last steps
    (:data:`MEASURE_SMOOTHING`),

    .. math::

        \lambda \leftarrow \operatorname{clip}\bigl(
        \lambda \exp(\eta s \operatorname{clip}(\bar R / \varepsilon - 1, -1, 1)),
        \lambda_{\min}, \lambda_{\max}\bigr),

    with :math:`s` the share of an epoch the step covers: mirror ascent on the dual with a
    logarithmic geometry. The multiplier grows while the constraint is violated and shrinks
    once it holds with slack, by at most a factor :math:`e^{\eta}` per epoch, so the same
    :math:`\eta` tracks multipliers that settle anywhere between :math:`\lambda_{\min}` and
    :math:`\lambda_{\max}`. The step is per epoch because the dual must move slower than the
    network can answer it whatever the batch size. The running mean matters: minibatch
    measures near a small bound are noisy, and clipping each step's violation
    would cut the large ones more than the small ones, so a constraint violated on average
    could see its multiplier fall. :math:`\lambda_{\min}` (:data:`MIN_MULTIPLIER`) stands
    in for 0, where a multiplicative step would stay; :math:`\lambda_{\max}`
    (:data:`MAX_MULTIPLIER`) bounds what a violation can weigh.

    A constraint with ``n_groups`` is a family :math:`R_g \le \varepsilon`, one per group
    (a perturbation), each with its own multiplier :math:`\lambda_g` and running mean. Its
    measure is a vector with NaN for the groups a step did not measure; the penalty is the
    mean of :math:`\lambda_g (R_g / \varepsilon - 1)` over the measured groups (so one
    group reads as a scalar constraint), and a group's running mean and multiplier move
    only in the steps that measure it. Were a group to step every step from a running mean
    it last updated epochs ago, one noisy reading of a rarely measured knock-out could
    drive its multiplier to :math:`\lambda_{\max}` before the next reading corrects it. So
    that rare groups still move at the same pace per epoch, a group's step is
    :math:`s / f_g` instead of :math:`s`, with :math:`f_g` a running estimate of the share
    of steps that measure it over about the last epoch (1 at the start, so the first epoch
    errs slow; at least :math:`s`, so one step moves at most :math:`e^{\eta}`). A group
    measured every step keeps :math:`f_g = 1` exactly. A bound on each group, not on their
    mean, keeps one group from staying far above the bound while the others hold it with
    slack.

    Parameters
    ----------
    name
        One of :data:`CONSTRAINTS`; the training history logs ``{name}_train`` (the
        measure), ``{name}_bound`` and ``{name}_multiplier``.
    bound
        The bound :math:`\varepsilon > 0`, in the measure's own scale-free units.
    lr
        Dual step size :math:`\eta > 0`, per epoch.
    multiplier
        Starting value of :math:`\lambda` (where an earlier fit left it), one for all
        groups or one per group; ``None`` starts at :math:`\lambda_{\min}`.
    n_groups
        Number of groups with a bound each; ``None``: a single, scalar constraint.

    """

    def __init__(
        self,
        name: str,
        bound: float,
        lr: float,
        multiplier: float | Sequence[float] | None = None,
        n_groups: int | None = None,
    ) -> None:
        super().__init__()
        if name not in CONSTRAINTS:
            raise ValueError(f"Unknown constraint {name!r}; expected one of {CONSTRAINTS}.")
        if not bound > 0:
            raise ValueError(
                f"{name}_bound must be > 0 (the largest {CONSTRAINT_MEANINGS[name]}), got "
                f"{bound}; use None to turn the constraint off."
            )
        if not lr > 0:
            raise ValueError(f"multiplier_lr must be > 0 (the dual step size), got {lr}.")
        shape = () if n_groups is None else (n_groups,)
        start = torch.as_tensor(MIN_MULTIPLIER if multiplier is None else multiplier)
        if start.ndim and start.shape != shape:
            expected = "a single number" if n_groups is None else f"{n_groups} numbers"
            raise ValueError(
                f"{name}: {start.numel()} starting multipliers given, expected {expected}."
            )
        self.name = name
        self.bound = float(bound)
        self.lr = float(lr)
        # A buffer, not a parameter: the optimizer of the primal problem must not touch it,
        # but it moves with the plan across devices and into checkpoints.
        self.register_buffer(
            "value",
            start.to(torch.float32).clamp(MIN_MULTIPLIER, MAX_MULTIPLIER).expand(shape).clone(),
        )
        # Running mean of the measure; NaN until a step measures it.
        self.register_buffer("running", torch.full(shape, float("nan")))
        # Running share of the steps that measure each group (over about one epoch).
        self.register_buffer("frequency", torch.ones(shape))

    def violation(self, measure: torch.Tensor) -> torch.Tensor:
        r"""Relative violation :math:`R / \varepsilon - 1` (negative while the bound holds)."""
        return measure / self.bound - 1

    def penalty(self, measure: torch.Tensor, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
        r"""Lagrangian term :math:`\lambda (R / \varepsilon - 1)\,\lvert\bar L\rvert`.

        For a family, the mean of the groups' terms over the groups measured this step.
        """
        # A copy, so that the in-place dual step after the forward pass leaves the autograd
        # graph of this step intact.
        terms = self.value.clone() * self.violation(measure)
        return mean_of_measured(terms, measure) * scale

    def weight(self, measure: torch.Tensor) -> torch.Tensor:
        """Return the multiplier this step's penalty carries (the mean over measured groups)."""
        return mean_of_measured(self.value.clone(), measure)

    def multipliers(self) -> float | list[float]:
        """Return the multiplier, or each group's, as plain numbers."""
        return self.value.tolist()

    def at_ceiling(self) -> torch.Tensor:
        """Return which groups a step measured whose multiplier is at :data:`MAX_MULTIPLIER`.

        A group no step measured (the controls) kept its starting value, which says nothing
        about its bound.
        """
        return ~self.running.isnan() & (self.value >= MAX_MULTIPLIER)

    @torch.no_grad()
    def step(self, measure: torch.Tensor, share: float = 1.0) -> None:
        r"""Take one dual-ascent step given the measure observed this step.

        ``share`` is the part of an epoch this step covers (1 / steps per epoch), so that
        the multiplier moves by at most :math:`e^{\eta}` per epoch however the data are cut
        into minibatches; a group of a family steps by ``share`` over the share of steps
        that measure it.
        """
        measure = measure.detach().to(self.running.dtype)
        measured = ~measure.isnan()
        # The first measure starts the running mean (a select: no wait for the device); an
        # unmeasured group keeps its running mean and its multiplier.
        previous = torch.where(self.running.isnan(), measure, self.running)
        updated = MEASURE_SMOOTHING * previous + (1 - MEASURE_SMOOTHING) * measure
        self.running.copy_(torch.where(measured, updated, self.running))
        self.frequency.add_(share * (measured.to(self.frequency.dtype) - self.frequency))
        rate = share / self.frequency.clamp(min=share)
        step = self.violation(self.running).clamp(-1.0, 1.0)
        moved = self.value * torch.exp(self.lr * rate * step)
        self.value.copy_(torch.where(measured, moved, self.value))
        self.value.clamp_(MIN_MULTIPLIER, MAX_MULTIPLIER)


# Dual step per epoch: the multiplier changes by at most this log-factor an epoch.
DEFAULT_MULTIPLIER_LR = 0.25
