"""Training curves of a ComparativeVI model: objectives, MGDA weight, constraints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ._utils import _finish

if TYPE_CHECKING:
    from .._model import ComparativeVI

_CONSTRAINTS = ("leakage", "dependence", "background_shift")


def training_diagnostics(
    model: ComparativeVI,
    *,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Plot the per-epoch training curves of a trained model.

    Four panels: the mean negative ELBO of control and perturbed cells; the MGDA weight of
    the control objective (0.5 is a plain sum); each constrained measure against its bound
    (dashed); and the Lagrange multipliers. A multiplier that keeps growing means its bound
    cannot be met; a measure far below its bound with a zero multiplier means the constraint
    is inactive. A model with ``prior="sparse"`` gets a fifth panel: the expected number of
    edges per perturbation against its annealed bound (dashed), whose multiplier joins the
    others.

    Parameters
    ----------
    model
        A trained :class:`~compvi.ComparativeVI`.
    show
        Show the figure; ``None`` shows it unless ``save`` is given, as scanpy does.
    save
        Write the figure to this path.

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
    for measure in _CONSTRAINTS:
        if f"{measure}_train" not in history:
            continue
        (line,) = axes[2].plot(
            history[f"{measure}_train"].index,
            history[f"{measure}_train"].to_numpy(dtype=float),
            label=measure,
        )
        if f"{measure}_bound" in history:
            axes[2].axhline(
                float(history[f"{measure}_bound"].iloc[-1, 0]), color=line.get_color(), ls="--"
            )
        if f"{measure}_multiplier" in history:
            axes[3].plot(
                history[f"{measure}_multiplier"].index,
                history[f"{measure}_multiplier"].to_numpy(dtype=float),
                label=measure,
                color=line.get_color(),
            )
    if sparse:
        for key, style in (("edges_train", "-"), ("edges_bound", "--")):
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
    axes[2].set(title="constrained measures (bounds dashed)", xlabel="epoch")
    axes[2].legend()
    axes[3].set(title="Lagrange multipliers", xlabel="epoch")
    if axes[3].lines:
        axes[3].legend()
    fig.tight_layout()
    _finish(fig, show, save)
    return fig
