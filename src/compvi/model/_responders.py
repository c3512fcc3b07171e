"""Responders and escapers: a two-component mixture against the control distribution."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import norm

# The fewest cells of a perturbation that cross-fitting can score: each of two halves is
# scored on the axis fitted on the other, so both halves need a cell.
MIN_CELLS_TO_SCORE = 2
# The fewest control cells: their spread is the unit of every score, and their mean is
# cross-fitted on two halves too.
MIN_CONTROL_CELLS = 2
_NO_CONTROL_SPREAD = (
    "The {n} control cells have no spread in the salient space (identical coordinates), "
    "and their spread is the unit of every perturbation score; include more, distinct "
    "control cells."
)


class ResponderFit(NamedTuple):
    """A fitted responder mixture, on scores standardized by the control cells.

    Attributes
    ----------
    fraction
        Mixing weight of the responder component (0 when the null model wins).
    mean, sd
        Mean and standard deviation of the responder component.
    bic_gain
        BIC of the null model (every cell like a control) minus that of the mixture;
        positive values favour the mixture.

    """

    fraction: float
    mean: float
    sd: float
    bic_gain: float


def responder_probability(
    scores: np.ndarray,
    control_scores: np.ndarray,
    *,
    min_effect: float = 1.0,
    max_iter: int = 500,
    tol: float = 1e-8,
) -> tuple[np.ndarray, ResponderFit]:
    r"""Posterior probability that each cell responded, against the control distribution.

    Scores are standardized by the control cells' mean and standard deviation, so control
    cells follow (about) :math:`N(0, 1)`. The cells of one perturbation are modelled as
    :math:`(1 - \pi) N(0, 1) + \pi N(m, v)` with the null component fixed (cells that look
    like controls: escapers) and :math:`\pi, m, v` fitted by expectation-maximisation,
    mixscape's model. The mixture is kept only if it lowers the BIC by more than its three
    extra parameters cost and its responder component lies at least ``min_effect`` control
    standard deviations above the controls (:math:`m \ge` ``min_effect``); otherwise every
    probability is 0, so a perturbation without effect has no responders, and cells that
    merely spread more widely than controls do not count as responding.

    Parameters
    ----------
    scores
        Scores of the perturbation's cells; larger means more perturbed.
    control_scores
        Scores of control cells on the same axis.
    min_effect
        Smallest mean shift of the responder component, in control standard deviations.
    max_iter, tol
        Expectation-maximisation stops after ``max_iter`` steps or when the log-likelihood
        improves by less than ``tol`` per cell.

    Returns
    -------
    Each cell's responder probability, and the fitted mixture.

    """
    scores = np.asarray(scores, dtype=float)
    control_scores = np.asarray(control_scores, dtype=float)
    if control_scores.size < 2 or not np.std(control_scores) > 0:
        raise ValueError("control_scores needs at least two distinct values.")
    if scores.size == 0:
        raise ValueError("scores is empty: the perturbation has no cells.")
    x = (scores - control_scores.mean()) / control_scores.std()
    null_logpdf = norm.logpdf(x)

    # Start the responder component on the upper half of the cells.
    upper = x[x >= np.median(x)]
    fraction, mean, sd = 0.5, upper.mean(), max(upper.std(), 0.5)
    loglik = -np.inf
    for _ in range(max_iter):
        probability, new_loglik = _posterior(x, null_logpdf, fraction, mean, sd)
        weight = probability.sum()
        if weight < 1e-9:
            break
        fraction = min(weight / x.size, 1 - 1e-9)
        mean = (probability * x).sum() / weight
        # A floor on the spread keeps the component from collapsing onto a single cell.
        sd = max(np.sqrt((probability * (x - mean) ** 2).sum() / weight), 0.1)
        converged = new_loglik - loglik < tol * x.size
        loglik = new_loglik
        if converged:
            break
    probability, loglik = _posterior(x, null_logpdf, fraction, mean, sd)

    bic_gain = 2 * (loglik - null_logpdf.sum()) - 3 * np.log(x.size)
    if not (bic_gain > 0 and mean >= min_effect):
        return np.zeros_like(x), ResponderFit(0.0, float(mean), float(sd), float(bic_gain))
    return probability, ResponderFit(float(fraction), float(mean), float(sd), float(bic_gain))


def _posterior(
    x: np.ndarray, null_logpdf: np.ndarray, fraction: float, mean: float, sd: float
) -> tuple[np.ndarray, float]:
    """Responder probabilities and the mixture's log-likelihood, computed in log space."""
    log_responder = np.log(fraction) + norm.logpdf(x, mean, sd)
    log_null = np.log1p(-fraction) + null_logpdf
    log_total = np.logaddexp(log_responder, log_null)
    return np.exp(log_responder - log_total), float(log_total.sum())


def score_perturbations(
    salient: np.ndarray,
    labels: np.ndarray,
    control: np.ndarray,
    *,
    threshold: float = 0.5,
    min_effect: float = 1.0,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Perturbation scores and responder probabilities of every perturbed cell.

    A perturbation's axis runs from the control cells' mean salient coordinates to its own
    cells' mean. Estimated from the same cells it scores, the axis would lean towards their
    noise and give even a null perturbation a positive mean score, so it is cross-fitted:
    each random half of the perturbation's cells (and of the controls) is scored on the axis
    estimated from the other half. Scores are in control standard deviations.

    Parameters
    ----------
    salient
        Cells x factors salient coordinates (any model's).
    labels
        Each cell's condition label.
    control
        Boolean mask of the control cells.
    threshold
        Responder probability at or above which a cell counts as a responder.
    min_effect
        As in :func:`responder_probability`.
    seed
        Seed of the random halves the directions are cross-fitted on.

    Returns
    -------
    Per cell (rows in input order): ``perturbation_score`` and ``responder_probability``,
    NaN for controls. Per perturbation, in order of first appearance: ``n_cells``,
    ``scored``, ``n_responders``, ``responder_fraction``, ``effect_size``,
    ``salient_shift``, ``bic_gain``. A perturbation with fewer than
    :data:`MIN_CELLS_TO_SCORE` cells cannot be cross-fitted (one half would be empty, and
    an axis fitted on the cell it scores points at that cell's own noise): its cells get NaN
    scores and probabilities, and its row ``scored=False``, no responders, and NaN
    ``responder_fraction``, ``effect_size`` and ``bic_gain``.

    Raises
    ------
    ValueError
        Fewer than :data:`MIN_CONTROL_CELLS` control cells, or non-finite coordinates.

    """
    salient = np.asarray(salient, dtype=float)
    labels = np.asarray(labels).astype(str)
    control = np.asarray(control, dtype=bool)
    if not np.isfinite(salient).all():
        raise ValueError("salient has NaN or infinite values.")
    if control.sum() < MIN_CONTROL_CELLS:
        raise ValueError(
            f"Perturbation scores need at least {MIN_CONTROL_CELLS} control cells (their "
            f"spread is the unit of every score), got {int(control.sum())}."
        )
    rng = np.random.default_rng(seed)
    cells = pd.DataFrame(
        {"perturbation_score": np.nan, "responder_probability": np.nan},
        index=pd.RangeIndex(len(labels)),
    )
    rows = {}
    for label in pd.unique(labels[~control]):
        members = np.flatnonzero((labels == label) & ~control)
        if members.size < MIN_CELLS_TO_SCORE:
            shift = salient[members].mean(0) - salient[control].mean(0)
            rows[label] = {
                "n_cells": int(members.size),
                "scored": False,
                "n_responders": 0,
                "responder_fraction": np.nan,
                "effect_size": np.nan,
                "salient_shift": float(np.linalg.norm(shift)),
                "bic_gain": np.nan,
            }
            continue
        score, control_scores, shift = _cross_fitted_scores(salient, members, control, rng)
        probability, fit = responder_probability(score, control_scores, min_effect=min_effect)
        cells.loc[members, "perturbation_score"] = score
        cells.loc[members, "responder_probability"] = probability
        rows[label] = {
            "n_cells": int(members.size),
            "scored": True,
            "n_responders": int((probability >= threshold).sum()),
            "responder_fraction": float((probability >= threshold).mean()),
            "effect_size": float(score.mean()),
            "salient_shift": float(np.linalg.norm(shift)),
            "bic_gain": fit.bic_gain,
        }
    return cells, pd.DataFrame.from_dict(rows, orient="index")


def _cross_fitted_scores(
    salient: np.ndarray, members: np.ndarray, control: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardized scores of ``members`` and of the controls, each on the other half's axis.

    Returns the members' scores, the controls' scores (on the same standardized scale) and
    the full-sample mean shift from the controls.
    """
    controls = np.flatnonzero(control)
    member_half = rng.permutation(members.size) % 2
    control_half = rng.permutation(controls.size) % 2
    member_scores = np.empty(members.size)
    control_scores = np.empty(controls.size)
    for half in (0, 1):
        # Both halves hold cells: score_perturbations cross-fits perturbations of at least
        # MIN_CELLS_TO_SCORE cells against at least MIN_CONTROL_CELLS controls.
        fit_members = members[member_half != half]
        fit_controls = controls[control_half != half]
        reference = salient[fit_controls].mean(0)
        axis = salient[fit_members].mean(0) - reference
        axis /= max(np.linalg.norm(axis), 1e-12)
        member_scores[member_half == half] = (
            salient[members[member_half == half]] - reference
        ) @ axis
        control_scores[control_half == half] = (
            salient[controls[control_half == half]] - reference
        ) @ axis
    center, spread = control_scores.mean(), control_scores.std()
    if not spread > 0:
        raise ValueError(_NO_CONTROL_SPREAD.format(n=controls.size))
    shift = salient[members].mean(0) - salient[controls].mean(0)
    return (member_scores - center) / spread, (control_scores - center) / spread, shift
