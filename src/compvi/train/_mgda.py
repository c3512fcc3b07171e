"""Min-norm (MGDA) weighting of two objectives that share parameters."""

from __future__ import annotations

import torch


def min_norm_weight(grad_first: torch.Tensor, grad_second: torch.Tensor) -> torch.Tensor:
    r"""Weight of the first objective in the min-norm convex combination of two gradients.

    Solves :math:`\min_{\alpha \in [0, 1]} \lVert \alpha g_1 + (1 - \alpha) g_2 \rVert^2`
    in closed form (Sener & Koltun, 2018):

    .. math::

        \alpha^* = \operatorname{clip}\left(
            \frac{(g_2 - g_1)^\top g_2}{\lVert g_1 - g_2 \rVert^2}, 0, 1\right).

    Parameters
    ----------
    grad_first
        Gradient :math:`g_1` of the first objective with respect to the shared parameters,
        any shape.
    grad_second
        Gradient :math:`g_2` of the second objective, same shape as ``grad_first``.

    Returns
    -------
    A 0-d tensor :math:`\alpha^*` in :math:`[0, 1]`; the second objective gets weight
    :math:`1 - \alpha^*`. Equal gradients give :math:`\alpha^* = 0.5`.

    """
    if grad_first.shape != grad_second.shape:
        raise ValueError(
            f"Both gradients must have the same shape, got {tuple(grad_first.shape)} "
            f"and {tuple(grad_second.shape)}."
        )
    g1 = grad_first.reshape(-1)
    g2 = grad_second.reshape(-1)
    return min_norm_weight_of_products(gradient_products(g1, g2))


def gradient_products(grad_first: torch.Tensor, grad_second: torch.Tensor) -> torch.Tensor:
    r"""Return :math:`(g_1^\top g_1, g_2^\top g_2, g_1^\top g_2)` for two flat gradients."""
    return torch.stack(
        [grad_first.dot(grad_first), grad_second.dot(grad_second), grad_first.dot(grad_second)]
    )


def min_norm_weight_of_products(products: torch.Tensor) -> torch.Tensor:
    r"""Return the weight of :func:`min_norm_weight` from the gradients' inner products.

    ``products`` holds :math:`(g_1^\top g_1, g_2^\top g_2, g_1^\top g_2)`, as
    :func:`gradient_products` returns them; the weight depends on the gradients through
    these alone, so running means of them give a smoothed weight.
    """
    first, second, cross = products.unbind()
    denom = first + second - 2 * cross
    # Identical gradients: every convex combination has the same norm, so split evenly.
    # A select, not a branch, so that the weight never waits for the device.
    degenerate = denom <= torch.finfo(denom.dtype).tiny
    alpha = ((second - cross) / torch.where(degenerate, 1.0, denom)).clamp(0.0, 1.0)
    return torch.where(degenerate, 0.5, alpha)
