"""User-facing scvi-tools model for comparative analysis of perturbation screens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from anndata import AnnData
from mudata import MuData
from scvi import settings
from scvi.data import AnnDataManager
from scvi.train import TrainRunner

from .._constants import (
    GENE_LIKELIHOODS,
    PRIORS,
    REGISTRY_KEYS,
    REPRESENTATION_KINDS,
)
from ..dataloaders._device_loaders import in_order_loader
from ..dataloaders._row_blocks import row_blocks, row_totals
from ..dataloaders._splitter import ComparativeDataSplitter
from ..module._vae import ComparativeVAE
from ..train._training_plan import ComparativeTrainingPlan
from . import _validation
from ._differential import DifferentialExpressionMixin
from ._perturbation_scores import PerturbationScoresMixin
from ._prior_outputs import PriorOutputsMixin
from ._registration import RegistrationMixin
from ._training import TrainingMixin


def _library_log_moments(manager: AnnDataManager, n_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the log total counts in each batch, for the library prior.

    As scvi-tools' ``_init_library_size`` (mean 0 and variance 1 for a batch without
    cells), but read a block of rows at a time, so a backed AnnData is never loaded whole.
    """
    counts = manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    batches = np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
    log_totals = np.concatenate([np.log(row_totals(block)) for block in row_blocks(counts)])
    means, variances = np.zeros((1, n_batch)), np.ones((1, n_batch))
    for code in np.unique(batches):
        values = log_totals[batches == code]
        means[0, code], variances[0, code] = values.mean(), values.var()
    return means.astype(np.float32), variances.astype(np.float32)


class ComparativeVI(
    DifferentialExpressionMixin,
    PerturbationScoresMixin,
    PriorOutputsMixin,
    TrainingMixin,
    RegistrationMixin,
):
    r"""Identifiable comparative variational inference for perturbation screens.

    Learns a *background* latent space shared by control and perturbed cells and a
    *salient* latent space that only perturbed cells use, with a decoder that is piece-wise
    affine in the latents (the condition under which both spaces are identifiable up to
    affine maps, Lopez et al. 2024), and three constraints enforced by Lagrange multipliers:
    how much salient signal control cells may keep, how dependent the two spaces may be,
    and how much the background may know about the condition (see :meth:`train`).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_background_latent
        Dimension of the background space.
    n_salient_latent
        Dimension of the salient space.
    n_hidden
        Width of the hidden layers.
    n_layers
        Number of hidden layers of the encoder trunk and of the decoder.
    dropout_rate
        Dropout rate of the encoder (the decoder has none).
    gene_likelihood
        ``"nb"`` (negative binomial), ``"zinb"`` (zero-inflated NB) or ``"poisson"``.
    use_observed_lib_size
        Scale expression by each cell's observed total counts (or registered size factors);
        if ``False``, the library size is a latent variable with a per-batch log-normal prior.
    prior
        Prior of the salient latent of perturbed cells. The block-wise guarantee identifies
        the salient *space*; the last three priors add the structure under which theory also
        identifies its axes, so that each salient factor can be read on its own (the user
        guide says how far this goes on simulated screens):

        - ``"normal"``: :math:`N(0, I)`, as in contrastiveVI.
        - ``"mixture"``: a learned Gaussian mixture with diagonal covariances, shared by all
          perturbations (Kivva et al., 2022); identifiable without labels. See
          :meth:`get_prior_parameters` and :meth:`get_component_responsibilities`.
        - ``"conditional"``: :math:`N(m_c, \mathrm{diag}\,\sigma_c^2)` learned per
          perturbation :math:`c` (iVAE, Khemakhem et al., 2020); identifies the axes when the
          perturbations change their variances enough (at least :math:`2 d_s + 1`
          perturbations in theory). See :meth:`get_prior_parameters`.
        - ``"sparse"``: each perturbation shifts a few salient factors only, through a
          learned perturbation → factor graph whose size ``train(edge_bound=...)`` bounds
          (mechanism sparsity, Lachapelle et al.). See :meth:`get_perturbation_graph`.

        The conditional and sparse priors learn parameters per perturbation, so a new
        AnnData whose condition column holds labels unseen at training raises a
        ``ValueError`` naming them, whatever the prior. Encoding
        (:meth:`get_latent_representation`) does not read the label, so the documented
        fallback for new perturbations is to label their cells with a trained perturbation
        in a copy of the AnnData and embed them.
    n_prior_components
        Number of components of the ``"mixture"`` prior (at least 2).
    mask_temperature
        Temperature of the Gumbel-sigmoid relaxation of the ``"sparse"`` prior's graph
        during training; lower is closer to a binary graph, with noisier gradients.

    Examples
    --------
    >>> adata = compvi.data.simulate_screen()
    >>> compvi.ComparativeVI.setup_anndata(adata, condition_key="condition",
    ...                                    control_category="control")
    >>> model = compvi.ComparativeVI(adata)
    >>> model.train(max_epochs=50)
    >>> adata.obsm["X_compvi_salient"] = model.get_latent_representation()
    >>> adata.obsm["X_compvi_background"] = model.get_latent_representation(
    ...     representation_kind="background")

    """

    _module_cls = ComparativeVAE
    _data_splitter_cls = ComparativeDataSplitter
    _training_plan_cls = ComparativeTrainingPlan
    _train_runner_cls = TrainRunner

    def __init__(
        self,
        adata: AnnData,
        n_background_latent: int = 10,
        n_salient_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        gene_likelihood: Literal["nb", "zinb", "poisson"] = "nb",
        use_observed_lib_size: bool = True,
        prior: Literal["normal", "mixture", "conditional", "sparse"] = "normal",
        n_prior_components: int = 10,
        mask_temperature: float = 0.5,
    ) -> None:
        super().__init__(adata)
        # Multipliers and the edge bound where the last fit left them (see train()); the
        # trailing underscore makes scvi-tools save it with the model and set it on load.
        self.constraint_state_: dict = {}
        for name, value in {
            "n_background_latent": n_background_latent,
            "n_salient_latent": n_salient_latent,
            "n_hidden": n_hidden,
            "n_layers": n_layers,
            "n_prior_components": n_prior_components,
        }.items():
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not 0 <= dropout_rate < 1:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}.")
        if gene_likelihood not in GENE_LIKELIHOODS:
            raise ValueError(
                f"gene_likelihood={gene_likelihood!r} is not one of {GENE_LIKELIHOODS}."
            )
        if prior not in PRIORS:
            raise ValueError(f"prior={prior!r} is not one of {PRIORS}.")
        if not mask_temperature > 0:
            raise ValueError(f"mask_temperature must be > 0, got {mask_temperature}.")
        setup_args = self.adata_manager.registry["setup_args"]
        with _validation.located(_validation.location(adata, setup_args, "rna_layer")):
            _validation.check_looks_like_counts(
                *_validation.registered_counts(adata, setup_args), gene_likelihood
            )

        n_batch = self.summary_stats.n_batch
        manager = self.adata_manager
        n_cats_per_cov = (
            manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY).n_cats_per_key
            if REGISTRY_KEYS.CAT_COVS_KEY in manager.data_registry
            else None
        )
        n_continuous_cov = (
            len(manager.get_state_registry(REGISTRY_KEYS.CONT_COVS_KEY).columns)
            if REGISTRY_KEYS.CONT_COVS_KEY in manager.data_registry
            else 0
        )
        use_size_factor_key = REGISTRY_KEYS.SIZE_FACTOR_KEY in manager.data_registry
        library_log_means, library_log_vars = None, None
        if not use_observed_lib_size and not use_size_factor_key:
            library_log_means, library_log_vars = _library_log_moments(manager, n_batch)

        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            control_codes=self._control_codes(),
            n_batch=n_batch,
            n_cats_per_cov=n_cats_per_cov,
            n_continuous_cov=n_continuous_cov,
            n_hidden=n_hidden,
            n_background_latent=n_background_latent,
            n_salient_latent=n_salient_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            gene_likelihood=gene_likelihood,
            use_observed_lib_size=use_observed_lib_size,
            use_size_factor_key=use_size_factor_key,
            library_log_means=library_log_means,
            library_log_vars=library_log_vars,
            n_conditions=len(self.conditions),
            prior=prior,
            n_prior_components=n_prior_components,
            mask_temperature=mask_temperature,
        )
        self._model_summary_string = (
            f"ComparativeVI: n_background_latent={n_background_latent}, "
            f"n_salient_latent={n_salient_latent}, n_hidden={n_hidden}, n_layers={n_layers}, "
            f"dropout_rate={dropout_rate}, gene_likelihood={gene_likelihood!r}, "
            f"use_observed_lib_size={use_observed_lib_size}, prior={prior!r}, "
            f"controls={self.control_categories}"
        )
        self.init_params_ = self._get_init_params(locals())

    def _make_data_loader(
        self,
        adata: AnnData | MuData,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        shuffle: bool = False,
        data_loader_class=None,
        **data_loader_kwargs,
    ):
        """Minibatches for inference, in the order of ``indices``, from memory or disk.

        When the cells asked for are in memory and fit on the model's device (see
        :func:`~compvi.dataloaders._device_data.choose_data_path`; ``data_path="auto" | "device" |
        "loader"`` in ``data_loader_kwargs``), they are held there once and each minibatch
        is gathered there. Otherwise scvi-tools' loader reads a backed AnnData's rows of
        each minibatch sorted, which reorders the outputs of unsorted ``indices``; this one
        puts them back. Shuffled or custom loaders are scvi-tools' own.
        """
        if shuffle or data_loader_class is not None:
            return super()._make_data_loader(
                adata, indices, batch_size, shuffle, data_loader_class, **data_loader_kwargs
            )
        return in_order_loader(
            self.get_anndata_manager(adata, required=True),
            indices,
            batch_size or settings.batch_size,
            self.device,
            **data_loader_kwargs,
        )

    # ---------------------------------------------------------------- inference
    @_validation.leaves_adata_untouched_on_error
    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        representation_kind: Literal["salient", "background"] = "salient",
        give_mean: bool = True,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Background or salient latent representation of each cell.

        Parameters
        ----------
        adata
            AnnData with the genes the model was trained on; ``None`` uses the training data.
        indices
            Cells to use, as positions in ``[0, n_cells)`` (in any order, repeats allowed) or
            a boolean mask with one entry per cell; ``None`` uses all.
        representation_kind
            ``"salient"`` (what the perturbation did) or ``"background"`` (what perturbed
            cells share with controls).
        give_mean
            Return the posterior mean instead of one posterior sample.
        batch_size
            Cells per minibatch; ``None`` uses ``scvi.settings.batch_size``.

        Returns
        -------
        Array of shape ``(n_cells, n_salient_latent)`` or ``(n_cells, n_background_latent)``.
        Control cells get their encoded salient coordinates (near 0 when leakage is low),
        not a hard zero.

        Raises
        ------
        ValueError
            A boolean mask of another length than the cells, negative or out-of-range
            positions, or a non-integer ``batch_size``; an AnnData that the checks of
            :meth:`setup_anndata` refuse.

        """
        if representation_kind not in REPRESENTATION_KINDS:
            raise ValueError(
                f"representation_kind={representation_kind!r} is not one of "
                f"{REPRESENTATION_KINDS}."
            )
        batch_size = _validation.check_integer(
            batch_size, "batch_size", minimum=1, allow_none=True
        )
        self._check_if_trained(warn=True)
        adata = self._validate_anndata(adata)
        indices = _validation.check_indices(indices, adata.n_obs)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        posterior_key = "qs" if representation_kind == "salient" else "qz"
        n_latent = (
            self.module.n_salient_latent
            if representation_kind == "salient"
            else self.module.n_background_latent
        )
        # Filled a minibatch at a time: memory holds the output and one minibatch only.
        latent = np.empty((len(loader.indices), n_latent), dtype=np.float32)
        start = 0
        for tensors in loader:
            outputs = self.module.inference(**self.module._get_inference_input(tensors))
            posterior = outputs[posterior_key]
            draw = posterior.loc if give_mean else posterior.sample()
            latent[start : start + len(draw)] = draw.cpu().numpy()
            start += len(draw)
        return latent
