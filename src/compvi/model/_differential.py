"""Differential expression of a ComparativeVI model, in scvi-tools' Bayesian framework."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi import settings
from scvi.model.base import DifferentialComputation
from scvi.model.base._differential import (
    describe_continuous_distrib,
    estimate_delta,
    estimate_pseudocounts_offset,
)
from scvi.utils import track

from .._constants import DE_MODES, DE_REFERENCES, REGISTRY_KEYS
from . import _validation
from ._count_summaries import StreamingCountsManager, mean_counts, paired_summaries, raw_summary
from ._expression import ExpressionMixin
from ._responders import MIN_CONTROL_CELLS
from ._scvi_compat import fdr_de_prediction

_EPS = 1e-8


def paired_change(
    full: np.ndarray,
    background: np.ndarray,
    *,
    mode: Literal["change", "vanilla"],
    delta: float | None,
    pseudocounts: float,
) -> dict[str, np.ndarray]:
    """Bayesian DE statistics of paired draws of full and counterfactual expression.

    Each row of ``full`` and ``background`` comes from the same cell and the same posterior
    draw, so the log fold change is taken within pairs instead of between random pairs of
    cells as in an unpaired comparison.

    Parameters
    ----------
    full, background
        Draws x genes normalized expression, paired by row.
    mode
        ``"change"``: the posterior probability that ``|LFC| >= delta`` (larger of the up
        and down probabilities), as in scvi-tools; ``"vanilla"``: the probability that
        ``full > background``.
    delta
        LFC threshold of ``"change"`` mode; ``None`` estimates it from the LFC means.
    pseudocounts
        Added to both sides before taking logs.

    Returns
    -------
    The columns of scvi-tools' DE tables: ``proba_de``, ``proba_not_de``, ``bayes_factor``,
    ``scale1``, ``scale2``, ``pseudocounts``, ``delta`` and ``lfc_*`` (change mode), or
    ``proba_m1``, ``proba_m2``, ``bayes_factor``, ``scale1``, ``scale2`` (vanilla mode).

    """
    scale1, scale2 = full.mean(0), background.mean(0)
    if mode == "vanilla":
        proba_m1 = np.mean(full > background, 0)
        return {
            "proba_m1": proba_m1,
            "proba_m2": 1.0 - proba_m1,
            "bayes_factor": np.log(proba_m1 + _EPS) - np.log(1.0 - proba_m1 + _EPS),
            "scale1": scale1,
            "scale2": scale2,
        }
    lfc = np.log2(full + pseudocounts) - np.log2(background + pseudocounts)
    delta = estimate_delta(lfc_means=lfc.mean(0)) if delta is None else delta
    proba_de = np.maximum(np.mean(lfc >= delta, 0), np.mean(lfc < -delta, 0))
    # scvi-tools describes the LFC with pseudocounts shrunk 1000-fold, so the summary is
    # close to the raw log ratio while the test above stays robust for silent genes.
    shrunk = np.log2(full + 1e-3 * pseudocounts) - np.log2(background + 1e-3 * pseudocounts)
    return {
        "proba_de": proba_de,
        "proba_not_de": 1.0 - proba_de,
        "bayes_factor": np.log(proba_de + _EPS) - np.log(1.0 - proba_de + _EPS),
        "scale1": scale1,
        "scale2": scale2,
        "pseudocounts": pseudocounts,
        "delta": delta,
        **{f"lfc_{k}": v for k, v in describe_continuous_distrib(shrunk, None).items()},
    }


class DifferentialExpressionMixin(ExpressionMixin):
    """Differential expression between conditions, or within cells against their counterfactual."""

    @_validation.leaves_adata_untouched_on_error
    def differential_expression(
        self,
        adata: AnnData | None = None,
        groupby: str | None = None,
        group1: str | Sequence[str] | None = None,
        group2: str | None = None,
        *,
        reference: Literal["counterfactual", "control"] = "counterfactual",
        mode: Literal["change", "vanilla"] = "change",
        delta: float | None = 0.25,
        pseudocounts: float | None = None,
        fdr_target: float = 0.05,
        n_samples_overall: int = 5000,
        batch_correction: bool = False,
        all_stats: bool = True,
        batch_size: int | None = None,
        silent: bool = False,
        **kwargs,
    ) -> pd.DataFrame:
        r"""Bayesian differential expression of perturbations, in scvi-tools' table format.

        Two references are available:

        - ``"counterfactual"`` (default): each group's cells decoded from both spaces
          against the same cells decoded with their salient coordinates set to zero. The
          change is exactly what the salient space attributes to the perturbation, paired
          cell by cell and posterior draw by posterior draw; differences in cell-state
          composition between groups (which live in the background space) cancel, and
          cells that escaped the perturbation contribute no change.
        - ``"control"``: scvi-tools' comparison of the full expression of ``group1``'s
          cells with that of ``group2``'s cells (by default every control cell), through
          :class:`scvi.model.base.DifferentialComputation`.

        Parameters
        ----------
        adata
            AnnData registered with the model; ``None`` uses the training data.
        groupby
            Column of ``adata.obs`` that defines the groups (without missing values);
            ``None`` uses the registered condition, read from its registered codes.
        group1
            Group(s) to test, one table block each (labels are compared as strings, so
            ``group1=1`` names the group ``1`` of a numeric column); ``None`` tests every
            group that is not a control.
        group2
            Reference group of ``reference="control"``; ``None`` uses all control cells.
            Not used by the counterfactual reference.
        reference
            ``"counterfactual"`` or ``"control"``.
        mode
            ``"change"`` (LFC beyond ``delta``) or ``"vanilla"`` (which side is larger).
        delta
            LFC threshold of ``"change"`` mode, > 0; ``None`` lets scvi-tools estimate it.
        pseudocounts
            Added to expression before taking logs, >= 0; ``None`` estimates it from genes
            that are rarely detected, as scvi-tools does.
        fdr_target
            Posterior expected false discovery rate of the ``is_de_fdr_*`` column, in
            (0, 1).
        n_samples_overall
            Posterior draws per group (cells drawn with replacement, one draw each); a
            positive integer.
        batch_correction
            ``reference="control"`` only (refused with the counterfactual reference): decode
            every draw in every batch and compare draws of the same batch, as scvi-tools
            does.
        all_stats
            Add raw-count statistics of ``group1`` against the reference cells (controls for
            the counterfactual reference): ``raw_mean1/2``, ``non_zeros_proportion1/2``,
            ``raw_normalized_mean1/2``.
        batch_size
            Cells per minibatch; ``None`` uses ``scvi.settings.batch_size``.
        silent
            Hide the progress bar.
        **kwargs
            ``reference="control"`` only: more arguments of
            :meth:`scvi.model.base.DifferentialComputation.get_bayes_factors`.

        Returns
        -------
        One block of rows per group of ``group1``, indexed by gene and sorted by
        ``proba_de`` (change mode) or ``bayes_factor`` (vanilla mode), with scvi-tools' columns
        (``proba_de``, ``bayes_factor``, ``lfc_mean``, ``lfc_median``, ``lfc_std``,
        ``scale1``, ``scale2``, ``is_de_fdr_<fdr_target>``, ...) and ``comparison``,
        ``group1``, ``group2``. Positive LFCs mean higher in ``group1`` (counterfactual:
        higher with the perturbation than without it).

        Raises
        ------
        ValueError
            An option outside its range; a ``groupby`` column with missing values; a
            condition column relabelled since registration; fewer than two control cells
            where the controls are used (``reference="control"`` without ``group2``, or
            the counterfactual reference with ``all_stats=True`` or
            ``pseudocounts=None``); an AnnData that the checks of setup refuse.
        KeyError
            A ``groupby`` that is not a column of ``adata.obs``.

        """
        if reference not in DE_REFERENCES:
            raise ValueError(f"reference={reference!r} is not one of {DE_REFERENCES}.")
        if mode not in DE_MODES:
            raise ValueError(f"mode={mode!r} is not one of {DE_MODES}.")
        if reference == "counterfactual" and (group2 is not None or kwargs or batch_correction):
            extra = (
                ["group2"] * (group2 is not None)
                + ["batch_correction"] * bool(batch_correction)
                + sorted(kwargs)
            )
            raise ValueError(
                f"{', '.join(extra)} only apply to reference='control'; the counterfactual "
                "reference compares each group with itself without its salient part (in "
                "each cell's own batch)."
            )
        delta = _validation.check_number(delta, "delta", low=0, low_open=True, allow_none=True)
        pseudocounts = _validation.check_number(
            pseudocounts, "pseudocounts", low=0, allow_none=True
        )
        fdr_target = _validation.check_number(
            fdr_target, "fdr_target", low=0, high=1, low_open=True, high_open=True
        )
        n_samples_overall = _validation.check_integer(
            n_samples_overall, "n_samples_overall", minimum=1
        )
        batch_size = _validation.check_integer(
            batch_size, "batch_size", minimum=1, allow_none=True
        )
        adata = self._validate_anndata(adata)
        manager = self.get_anndata_manager(adata, required=True)
        condition_key = manager.registry["setup_args"]["condition_key"]
        control_cells = ~self._is_perturbed(manager)
        if groupby is None or groupby == condition_key:
            # The registered codes, which also define the controls (_validate_anndata has
            # refused a condition column relabelled since registration).
            groupby = condition_key
            codes = np.asarray(manager.get_from_registry(REGISTRY_KEYS.CONDITION_KEY)).ravel()
            labels = np.asarray(self.conditions, dtype=object)[codes].astype(str)
        else:
            if groupby not in adata.obs:
                raise KeyError(
                    f"groupby={groupby!r} is not a column of adata.obs "
                    f"(columns: {list(adata.obs.columns)[:20]})."
                )
            column = adata.obs[groupby]
            n_missing = int(column.isna().sum())
            if n_missing:
                raise ValueError(
                    f"adata.obs[{groupby!r}] (groupby) has {n_missing} missing values, which "
                    "would form a group of their own; fill them or drop those cells first."
                )
            labels = column.astype(str).to_numpy()
        if group1 is None:
            group1 = [g for g in pd.unique(labels) if g not in self.control_categories]
        elif isinstance(group1, str) or np.ndim(group1) == 0:
            group1 = [group1]  # one group, possibly a number of a numeric column
        group1 = [str(group) for group in group1]
        if not group1:
            raise ValueError(
                f"group1 names no group of adata.obs[{groupby!r}] to test: every cell is a "
                "control. Pass group1 (and, with reference='control', group2) explicitly."
            )
        uses_controls = (
            group2 is None if reference == "control" else all_stats or pseudocounts is None
        )
        if uses_controls and control_cells.sum() < MIN_CONTROL_CELLS:
            fix = (
                "pass group2 (another group of adata.obs[groupby]) as the reference"
                if reference == "control"
                else "pass all_stats=False and a pseudocounts value, which are what the "
                "counterfactual reference reads the controls for"
            )
            raise ValueError(
                f"adata has {int(control_cells.sum())} control cells; differential "
                f"expression against the controls needs at least {MIN_CONTROL_CELLS}. Include "
                f"control cells in adata, or {fix}."
            )
        for group in [*group1, *([group2] if group2 is not None else [])]:
            if not (labels == str(group)).any():
                raise ValueError(
                    f"{group!r} has no cells in adata.obs[{groupby!r}]; its labels are "
                    f"{sorted(set(labels))[:10]}."
                )
        if group2 is None:
            reference_cells, group2_name = control_cells, "control"
        else:
            reference_cells, group2_name = labels == str(group2), str(group2)

        # Cells are drawn with a generator seeded like the rest of scvi-tools, so a run with
        # the same scvi.settings.seed draws the same cells.
        rng = np.random.default_rng(settings.seed)
        tables = []
        computation = DifferentialComputation(
            self._scale_sampler(adata, batch_size, rng), None, StreamingCountsManager(manager)
        )
        # The reference side is the same for every group: read its raw counts once.
        counts = manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        compared = control_cells if reference == "counterfactual" else reference_cells
        reference_summary = raw_summary(counts, compared) if all_stats else None
        control_mean = (
            mean_counts(counts, control_cells)
            if reference == "counterfactual" and pseudocounts is None
            else None
        )
        for group in track(group1, description="DE...", disable=silent):
            cells = labels == str(group)
            if reference == "counterfactual":
                stats = self._counterfactual_change(
                    adata,
                    counts,
                    cells,
                    control_mean,
                    mode=mode,
                    delta=delta,
                    pseudocounts=pseudocounts,
                    n_samples_overall=n_samples_overall,
                    batch_size=batch_size,
                    rng=rng,
                )
                name = "counterfactual"
            else:
                stats = computation.get_bayes_factors(
                    cells,
                    reference_cells,
                    mode=mode,
                    delta=delta,
                    pseudocounts=pseudocounts,
                    n_samples_overall=n_samples_overall,
                    use_observed_batches=not batch_correction,
                    **kwargs,
                )
                name = group2_name
            if all_stats:
                stats.update(paired_summaries(raw_summary(counts, cells), reference_summary))
            table = pd.DataFrame(stats, index=self._gene_names(adata))
            table = table.sort_values(
                "proba_de" if mode == "change" else "bayes_factor", ascending=False
            )
            if mode == "change":
                table[f"is_de_fdr_{fdr_target}"] = fdr_de_prediction(
                    table["proba_de"], fdr=fdr_target
                )
            table["comparison"] = f"{group} vs {name}"
            table["group1"] = str(group)
            table["group2"] = name
            tables.append(table)
        return pd.concat(tables, axis=0)

    def _scale_sampler(
        self, adata: AnnData, batch_size: int | None, rng: np.random.Generator
    ) -> Callable[..., np.ndarray]:
        """Posterior draws of full expression, as scvi-tools' DE machinery calls them."""

        def sample(
            adata_: AnnData,
            indices: np.ndarray,
            transform_batch: str | None = None,
            n_samples_overall: int | None = None,
        ) -> np.ndarray:
            if n_samples_overall is not None:
                indices = rng.choice(indices, n_samples_overall)
            samples, _, _ = self._decode_expression(
                adata,
                indices,
                ("full",),
                transform_batch=transform_batch,
                n_samples=1,
                batch_size=batch_size,
            )
            return samples["full"][0]

        return sample

    def _counterfactual_change(
        self,
        adata: AnnData,
        counts,
        cells: np.ndarray,
        control_mean: np.ndarray | None,
        *,
        mode: str,
        delta: float | None,
        pseudocounts: float | None,
        n_samples_overall: int,
        batch_size: int | None,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        draws = rng.choice(np.flatnonzero(cells), n_samples_overall)
        samples, _, _ = self._decode_expression(
            adata, draws, ("full", "background"), n_samples=1, batch_size=batch_size
        )
        full, background = samples["full"][0], samples["background"][0]
        if pseudocounts is None:
            # scvi-tools' estimate: a quantile of the largest expression of genes that are
            # (almost) never detected in the raw counts of each side.
            silent_in = [mean < 0.01 for mean in (mean_counts(counts, cells), control_mean)]
            pseudocounts = estimate_pseudocounts_offset(full, background, *silent_in, 0.9)
        return paired_change(full, background, mode=mode, delta=delta, pseudocounts=pseudocounts)
