"""Training curves of a ComparativeVI model: objectives, MGDA weight, constraints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .._constants import CONSTRAINTS, DEFAULT_BOUNDS, PER_CONDITION_CONSTRAINTS
from .._docstrings import doc
from ._utils import _finish

if TYPE_CHECKING:
    from ..model import ComparativeVI

# The edge bound has a panel of its own (it is annealed, and counts edges).
_SPACE_CONSTRAINTS = (CONSTRAINTS.LEAKAGE, CONSTRAINTS.DEPENDENCE, CONSTRAINTS.BACKGROUND_SHIFT)


@doc.dedent
def training_diagnostics(
    model: ComparativeVI,
    *,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Plot the per-epoch training curves of a trained model.

    Four panels: the mean negative ELBO of control and perturbed cells; the MGDA weight of
    the control objective (0.5 is a plain sum); each constrained measure divided by its
    bound (the dashed line at 1 is the bound; a measure without a bound is drawn against
    the default one; the background shift is the mean over perturbations); and the Lagrange
    multipliers on a log scale (for the background shift, bounded for each perturbation,
    the largest of them). A multiplier that keeps growing means its bound cannot be met; a
    measure below 1 with a multiplier at the floor means the constraint is inactive. A model
    with ``prior="sparse"`` gets a fifth panel: the expected number of edges per
    perturbation against its annealed bound (dashed), whose multiplier joins the others.

    Parameters
    ----------
    model
        A trained :class:`~compvi.ComparativeVI`.
    %(show_save)s

    Returns
    -------
    The figure, with its four (five with the sparse prior) axes in ``figure.axes``.

    """
    history = model.history
    if history is None or "loss_control_train" not in history:
        raise ValueError("The model has no training history; call model.train() first.")
    sparse = "edges_train" in history
    fig, axes = plt.subplots(1, 5 if sparse else 4, figsize=(19 if sparse else 15, 3.2))
    for key, label in (("loss_control_train", "control"), ("loss_perturbed_train", "perturbed")):
        axes[0].plot(history[key].index, history[key].to_numpy(dtype=float), label=label)
    axes[0].set(title="objectives", xlabel="epoch", ylabel="mean negative ELBO")
    axes[0].legend()
    axes[1].plot(history["mgda_weight"].index, history["mgda_weight"].to_numpy(dtype=float))
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[1].set(title="MGDA weight of controls", xlabel="epoch", ylim=(0, 1))
    for measure in _SPACE_CONSTRAINTS:
        if f"{measure}_train" not in history:
            continue
        bound_key = f"{measure}_bound"
        bound = (
            history[bound_key].to_numpy(dtype=float).ravel()
            if bound_key in history
            else DEFAULT_BOUNDS[measure]
        )
        label = measure if bound_key in history else f"{measure} (no bound)"
        (line,) = axes[2].plot(
            history[f"{measure}_train"].index,
            history[f"{measure}_train"].to_numpy(dtype=float).ravel() / bound,
            label=label,
        )
        if f"{measure}_multiplier" in history:
            axes[3].plot(
                history[f"{measure}_multiplier"].index,
                history[f"{measure}_multiplier"].to_numpy(dtype=float),
                # One multiplier per perturbation: the history has the largest.
                label=f"{measure} (largest)" if measure in PER_CONDITION_CONSTRAINTS else measure,
                color=line.get_color(),
            )
    axes[2].axhline(1.0, color="grey", ls="--")
    if sparse:
        for key, style in (
            (f"{CONSTRAINTS.EDGES}_train", "-"),
            (f"{CONSTRAINTS.EDGES}_bound", "--"),
        ):
            if key in history:
                axes[4].plot(history[key].index, history[key].to_numpy(dtype=float), "k" + style)
        axes[4].set(title="edges per perturbation (bound dashed)", xlabel="epoch")
        if "edges_multiplier" in history:
            axes[3].plot(
                history["edges_multiplier"].index,
                history["edges_multiplier"].to_numpy(dtype=float),
                label="edges",
                color="black",
            )
    axes[2].set(title="measure / bound (1 = bound)", xlabel="epoch")
    axes[2].legend()
    axes[3].set(title="Lagrange multipliers", xlabel="epoch", yscale="log")
    if axes[3].lines:
        axes[3].legend()
    fig.tight_layout()
    _finish(fig, show, save)
    return fig
