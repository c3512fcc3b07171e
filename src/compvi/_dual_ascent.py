"""Lagrange multipliers for inequality constraints, updated by projected dual ascent."""

from __future__ import annotations

import torch


class DualAscentMultiplier(torch.nn.Module):
    r"""Multiplier :math:`\lambda \ge 0` for a constraint :math:`R \le \varepsilon`.

    Training minimizes :math:`L(\theta) + \lambda (R(\theta) - \varepsilon)` over the model
    parameters while :math:`\lambda` follows projected gradient ascent on the dual,

    .. math::

        \lambda \leftarrow \max\bigl(0, \lambda + \eta (R - \varepsilon)\bigr),

    so it grows while the constraint is violated and decays back towards zero once the
    constraint holds with slack.

    Parameters
    ----------
    bound
        The constraint level :math:`\varepsilon \ge 0`.
    lr
        Dual step size :math:`\eta > 0`.

    """

    def __init__(self, bound: float, lr: float) -> None:
        super().__init__()
        if bound < 0:
            raise ValueError(f"The constraint bound must be >= 0, got {bound}.")
        if lr <= 0:
            raise ValueError(f"The dual step size must be > 0, got {lr}.")
        self.bound = float(bound)
        self.lr = float(lr)
        # A buffer, not a parameter: the optimizer of the primal problem must not touch it,
        # but it moves with the module across devices and into checkpoints.
        self.register_buffer("value", torch.zeros(()))

    def penalty(self, measure: torch.Tensor) -> torch.Tensor:
        r"""Lagrangian term :math:`\lambda (R - \varepsilon)` for the current multiplier."""
        # A copy, so that the in-place dual step after the forward pass leaves the autograd
        # graph of this step intact.
        return self.value.clone() * (measure - self.bound)

    @torch.no_grad()
    def step(self, measure: torch.Tensor) -> None:
        """Take one dual-ascent step given the constraint measure observed this step."""
        self.value.add_(self.lr * (measure.detach() - self.bound)).clamp_(min=0.0)
