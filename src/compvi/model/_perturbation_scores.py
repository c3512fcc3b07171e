"""Per-cell perturbation scores and responders, per-perturbation summaries, adata writer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import EXPRESSION_KINDS, REGISTRY_KEYS
from . import _validation
from ._expression import ExpressionMixin
from ._responders import MIN_CONTROL_CELLS, score_perturbations

CELL_CLASSES = ("control", "responder", "escaper", "unscored")
# Marks the uns entry that add_results wrote, so that it may overwrite its own keys only.
_WRITER = "compvi.ComparativeVI.add_results"


def _check_scoring(
    threshold: float, min_effect: float, n_top_genes: int, batch_size: int | None
) -> tuple[float, float, int, int | None]:
    """Raise on scoring options that cannot work, before any cell is encoded."""
    return (
        _validation.check_number(
            threshold, "threshold", low=0, high=1, low_open=True, high_open=True
        ),
        _validation.check_number(min_effect, "min_effect", low=0),
        _validation.check_integer(n_top_genes, "n_top_genes", minimum=0),
        _validation.check_integer(batch_size, "batch_size", minimum=1, allow_none=True),
    )


def _check_scorable(control: np.ndarray, n_cells: int) -> None:
    """Refuse an AnnData without the control and perturbed cells that scores compare."""
    n_controls = int(control.sum())
    if n_controls < MIN_CONTROL_CELLS:
        raise ValueError(
            f"adata has {n_controls} control cells; perturbation scores need at least "
            f"{MIN_CONTROL_CELLS} (their spread is the unit of every score). Include control "
            "cells in adata."
        )
    if n_controls == n_cells:
        raise ValueError(
            "adata has control cells only: there is no perturbation to score. To embed "
            "them, use get_latent_representation(adata)."
        )


def _keys_written(key_added: str) -> dict[str, list[str]]:
    """Every key ``add_results`` writes, by slot."""
    return {
        "obsm": [f"X_{key_added}_salient", f"X_{key_added}_background"],
        "obs": [
            f"{key_added}_{column}"
            for column in ("salient_norm", "perturbation_score", "responder_probability", "class")
        ],
        "uns": [key_added],
    }


class PerturbationScores(NamedTuple):
    """Result of :meth:`~compvi.ComparativeVI.get_perturbation_scores`.

    ``cells`` has one row per cell (indexed by ``obs_names``): ``condition``,
    ``salient_norm``, ``perturbation_score``, ``responder_probability`` and ``cell_class``.
    ``perturbations`` has one row per perturbation (indexed by its label), sorted by
    ``effect_size``: ``n_cells``, ``n_responders``, ``responder_fraction``, ``effect_size``,
    ``salient_shift``, ``bic_gain`` and ``top_genes``.
    """

    cells: pd.DataFrame
    perturbations: pd.DataFrame


class PerturbationScoresMixin(ExpressionMixin):
    """How strongly, and in which cells, each perturbation acted."""

    @_validation.leaves_adata_untouched_on_error
    def get_perturbation_scores(
        self,
        adata: AnnData | None = None,
        *,
        threshold: float = 0.5,
        min_effect: float = 1.0,
        n_top_genes: int = 5,
        batch_size: int | None = None,
    ) -> PerturbationScores:
        r"""Score every cell for its perturbation, and tell responders from escapers.

        For each perturbation :math:`c`, the direction
        :math:`u_c = (\bar\mu_c - \bar\mu_0) / \lVert\bar\mu_c - \bar\mu_0\rVert` runs from the
        mean salient coordinates of control cells to those of the perturbation's cells. A
        cell's *perturbation score* is its salient coordinates projected on :math:`u_c`,
        standardized by the control cells' projections (so controls have mean 0 and standard
        deviation 1 on every perturbation's axis). The direction is cross-fitted: each half
        of the cells is scored on the direction estimated from the other half, so a null
        perturbation scores about 0 instead of leaning towards its own noise.

        The scores of the perturbation's cells are fitted by expectation-maximisation with a
        mixture of the control distribution (fixed) and a Gaussian responder component, kept
        only if it beats "every cell is like a control" by BIC and lies ``min_effect`` or more
        above the controls. A cell whose responder probability is below ``threshold`` looks
        like a control in the salient space: an *escaper*, as mixscape calls them.

        Parameters
        ----------
        adata
            AnnData registered with the model; ``None`` uses the training data.
        threshold
            Responder probability at or above which a cell counts as a responder.
        min_effect
            Smallest mean score of the responder component, in control standard deviations;
            a perturbation whose fitted responders sit closer to the controls has none.
        n_top_genes
            Genes listed in ``top_genes``: the largest absolute log2 fold changes between
            the perturbation's mean expression decoded with and without its salient part
            (per 10k counts, pseudocount 1).
        batch_size
            Cells per minibatch; ``None`` uses ``scvi.settings.batch_size``.

        Returns
        -------
        :class:`~compvi.PerturbationScores` with a per-cell and a per-perturbation table.
        Control cells have ``perturbation_score`` and ``responder_probability`` NaN and
        class ``"control"``. ``effect_size`` is the mean perturbation score of all the
        perturbation's cells (escapers included), in control standard deviations;
        ``salient_shift`` is :math:`\lVert\bar\mu_c - \bar\mu_0\rVert`; ``bic_gain`` > 0 means
        the responder mixture beat "every cell is like a control".

        A perturbation with a single cell cannot be cross-fitted (an axis fitted on the cell
        it scores points at that cell's noise, so even a null perturbation would look like a
        strong responder): its row has ``scored=False``, no responders and NaN
        ``responder_fraction``, ``effect_size`` and ``bic_gain``, and its cell has NaN
        ``perturbation_score`` and ``responder_probability`` and class ``"unscored"``.
        Every other row has ``scored=True``.

        Raises
        ------
        ValueError
            ``threshold`` outside (0, 1), ``min_effect`` negative or not finite,
            ``n_top_genes`` not a non-negative integer; ``adata`` with fewer than two
            control cells, or with control cells only.

        """
        threshold, min_effect, n_top_genes, batch_size = _check_scoring(
            threshold, min_effect, n_top_genes, batch_size
        )
        adata = self._validate_anndata(adata)
        salient = self.get_latent_representation(adata, batch_size=batch_size)
        return self._score_salient(adata, salient, threshold, min_effect, n_top_genes, batch_size)

    def _score_salient(
        self,
        adata: AnnData,
        salient: np.ndarray,
        threshold: float,
        min_effect: float,
        n_top_genes: int,
        batch_size: int | None,
    ) -> PerturbationScores:
        """Score validated ``adata`` from its salient embedding, already encoded."""
        manager = self.get_anndata_manager(adata, required=True)
        codes = np.asarray(manager.get_from_registry(REGISTRY_KEYS.CONDITION_KEY)).ravel()
        labels = np.asarray(self.conditions)[codes]
        control = ~self._is_perturbed(manager)
        _check_scorable(control, len(codes))
        scores, perturbations = score_perturbations(
            salient, labels, control, threshold=threshold, min_effect=min_effect
        )
        cells = pd.DataFrame(
            {
                "condition": pd.Categorical(labels, categories=self.conditions),
                "salient_norm": np.linalg.norm(salient, axis=1),
                "perturbation_score": scores["perturbation_score"].to_numpy(),
                "responder_probability": scores["responder_probability"].to_numpy(),
            },
            index=adata.obs_names.copy(),
        )
        perturbations["top_genes"] = [
            self._top_genes(adata, labels == label, n_top_genes, batch_size)
            for label in perturbations.index
        ]
        classes = np.where(cells["responder_probability"] >= threshold, "responder", "escaper")
        classes[cells["perturbation_score"].isna().to_numpy()] = "unscored"
        classes[control] = "control"
        cells["cell_class"] = pd.Categorical(classes, categories=CELL_CLASSES)
        perturbations = perturbations.sort_values("effect_size", ascending=False)
        return PerturbationScores(cells=cells, perturbations=perturbations)

    def _top_genes(
        self, adata: AnnData, members: np.ndarray, n_top_genes: int, batch_size: int | None
    ) -> str:
        """List the genes with the largest salient log2 fold change, with their signs."""
        if n_top_genes == 0:
            return ""
        samples, _, genes = self._decode_expression(
            adata,
            np.flatnonzero(members),
            EXPRESSION_KINDS,
            library_size=1e4,
            batch_size=batch_size,
        )
        full, background = (samples[kind][0].mean(0) for kind in EXPRESSION_KINDS)
        lfc = pd.Series(np.log2(full + 1) - np.log2(background + 1), index=genes)
        top = lfc.abs().sort_values(ascending=False).index[:n_top_genes]
        return ", ".join(f"{gene} ({lfc[gene]:+.2f})" for gene in top)

    @_validation.leaves_adata_untouched_on_error
    def add_results(
        self,
        adata: AnnData | None = None,
        *,
        key_added: str = "compvi",
        threshold: float = 0.5,
        min_effect: float = 1.0,
        n_top_genes: int = 5,
        batch_size: int | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write both embeddings and the perturbation scores into ``adata``, for scanpy.

        Everything is computed before anything is written, so a call that fails leaves
        ``adata`` as it was.

        Parameters
        ----------
        adata
            AnnData registered with the model; ``None`` uses the training data.
        key_added
            Prefix of every key written; a non-empty string without ``"/"`` (which h5ad
            files reserve for groups).
        threshold, min_effect, n_top_genes
            As in :meth:`get_perturbation_scores`.
        batch_size
            Cells per minibatch; ``None`` uses ``scvi.settings.batch_size``.
        overwrite
            Replace keys that exist in ``adata`` but were not written by an earlier
            ``add_results`` with the same ``key_added``. Keys written by ``add_results``
            are always replaced. The columns registered with the model (the condition,
            batch and covariate columns, ``_scvi_*``) are never overwritten.

        Returns
        -------
        Nothing; sets in ``adata`` (with the default ``key_added="compvi"``):

        ``obsm["X_compvi_salient"]``, ``obsm["X_compvi_background"]``
            Posterior means of the salient and background latents.
        ``obs["compvi_salient_norm"]``
            Euclidean norm of each cell's salient coordinates.
        ``obs["compvi_perturbation_score"]``, ``obs["compvi_responder_probability"]``
            Each perturbed cell's score and responder probability (NaN for controls and for
            the cell of a one-cell perturbation).
        ``obs["compvi_class"]``
            ``"control"``, ``"responder"``, ``"escaper"`` or ``"unscored"``.
        ``uns["compvi"]``
            ``{"perturbations": <per-perturbation table>, "params": {...}, "written_by":
            "compvi.ComparativeVI.add_results"}``.

        Raises
        ------
        ValueError
            A ``key_added`` that is not a non-empty string or contains ``"/"``; keys that
            ``add_results`` did not write (without ``overwrite=True``) or registered
            columns; the scoring options and AnnData that :meth:`get_perturbation_scores`
            refuses.

        """
        threshold, min_effect, n_top_genes, batch_size = _check_scoring(
            threshold, min_effect, n_top_genes, batch_size
        )
        if not isinstance(key_added, str) or not key_added or "/" in key_added:
            raise ValueError(
                "key_added must be a non-empty string without '/' (h5ad files read '/' as a "
                f"group separator), got {key_added!r}."
            )
        if not isinstance(overwrite, bool | np.bool_):
            raise ValueError(f"overwrite must be True or False, got {overwrite!r}.")
        self._check_writable(self.adata if adata is None else adata, key_added, overwrite)
        adata = self._validate_anndata(adata)
        salient = self.get_latent_representation(adata, batch_size=batch_size)
        scores = self._score_salient(
            adata, salient, threshold, min_effect, n_top_genes, batch_size
        )
        background = self.get_latent_representation(
            adata, representation_kind="background", batch_size=batch_size
        )
        # Written last, when every result is ready.
        adata.obsm[f"X_{key_added}_salient"] = salient
        adata.obsm[f"X_{key_added}_background"] = background
        for column in ("salient_norm", "perturbation_score", "responder_probability"):
            adata.obs[f"{key_added}_{column}"] = scores.cells[column].to_numpy()
        adata.obs[f"{key_added}_class"] = scores.cells["cell_class"].array
        adata.uns[key_added] = {
            "perturbations": scores.perturbations,
            "params": {
                "threshold": threshold,
                "min_effect": min_effect,
                "n_top_genes": n_top_genes,
            },
            "written_by": _WRITER,
        }

    def _check_writable(self, adata: AnnData, key_added: str, overwrite: bool) -> None:
        """Refuse to overwrite registered columns, or keys add_results did not write."""
        keys = _keys_written(key_added)
        setup_args = self.adata_manager.registry["setup_args"]
        registered = {
            setup_args.get(argument)
            for argument in ("condition_key", "batch_key", "size_factor_key")
        }
        for argument in ("categorical_covariate_keys", "continuous_covariate_keys"):
            registered.update(setup_args.get(argument) or [])
        clashes = [k for k in keys["obs"] if k in registered or k.startswith("_scvi")]
        if clashes:
            raise ValueError(
                f"key_added={key_added!r} would overwrite adata.obs[{clashes[0]!r}], which is "
                "registered with the model (the model reads it); choose another key_added."
            )
        previous = adata.uns.get(key_added)
        own = isinstance(previous, Mapping) and previous.get("written_by") == _WRITER
        existing = [
            f"adata.{slot}[{key!r}]"
            for slot, slot_keys in keys.items()
            for key in slot_keys
            if key in getattr(adata, slot)
        ]
        if existing and not own and not overwrite:
            raise ValueError(
                f"add_results(key_added={key_added!r}) would overwrite {existing[:5]}, which it "
                "did not write; choose another key_added, or pass overwrite=True to replace "
                "them."
            )
