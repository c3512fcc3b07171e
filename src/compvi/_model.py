"""User-facing scvi-tools model for comparative analysis of perturbation screens."""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from mudata import MuData
from scvi import settings
from scvi.data import AnnDataManager
from scvi.data._constants import _SCVI_UUID_KEY
from scvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    MuDataCategoricalJointObsField,
    MuDataCategoricalObsField,
    MuDataLayerField,
    MuDataNumericalJointObsField,
    MuDataNumericalObsField,
    NumericalJointObsField,
    NumericalObsField,
)
from scvi.model._utils import get_max_epochs_heuristic
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from . import _validation
from ._constants import (
    GENE_LIKELIHOODS,
    PRIORS,
    REGISTRY_KEYS,
    REPRESENTATION_KINDS,
)
from ._constraints import CONSTRAINT_MEANINGS, CONSTRAINTS, DEFAULT_BOUNDS, DEFAULT_MULTIPLIER_LR
from ._data_splitting import ComparativeDataSplitter
from ._device_data import in_order_loader
from ._differential import DifferentialExpressionMixin
from ._expression import ExpressionMixin
from ._module import ComparativeVAE
from ._perturbation_scores import PerturbationScoresMixin
from ._prior_outputs import PriorOutputsMixin
from ._row_blocks import row_blocks, row_totals
from ._scvi_compat import read_saved_model
from ._training_plan import ComparativeTrainingPlan

# A constraint counts as violated at the end of training when its mean measure over the last
# tenth of the epochs is above this multiple of its bound. Once its multiplier has settled a
# measure hovers around its bound (1.25 to 1.6 times it in a quarter of the simulated
# benchmark's runs), which is not worth a warning; twice the bound is.
VIOLATION_TOLERANCE = 2.0
# Share of the training epochs over which the KL weight rises to 1 by default.
KL_WARMUP_FRACTION = 0.5


def default_kl_warmup_epochs(max_epochs: int) -> int:
    """Epochs over which the KL weight rises to 1 when the user does not say.

    scvi-tools warms up over 400 epochs whatever the run's length, so a 100-epoch run ends
    with the priors at a quarter of their weight, too little for a learned salient prior
    to shape the salient axes. Half of the run lets the reconstruction settle first and
    leaves the second half at the full evidence lower bound.
    """
    return max(1, round(KL_WARMUP_FRACTION * max_epochs))


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
    ExpressionMixin,
    DifferentialExpressionMixin,
    PerturbationScoresMixin,
    PriorOutputsMixin,
    BaseModelClass,
):
    r"""Identifiable comparative variational inference for perturbation screens.

    Learns a *background* latent space shared by control and perturbed cells and a
    *salient* latent space that only perturbed cells use, with a decoder that is piece-wise
    affine in the latents (the condition under which both spaces are identifiable up to
    affine maps, Lopez et al. 2024), MGDA balancing of the control and perturbed objectives,
    and a constraint on how much salient signal control cells may carry.

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
        # Multipliers and the edge bound where the last fit left them (see train()).
        self._constraint_state: dict = {}
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

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        condition_key: str,
        control_category: str | Sequence[str],
        layer: str | None = None,
        batch_key: str | None = None,
        size_factor_key: str | None = None,
        categorical_covariate_keys: Sequence[str] | None = None,
        continuous_covariate_keys: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        """Register an AnnData's counts, condition and covariates with ComparativeVI.

        Checks the input first and raises before anything is written. Like every
        scvi-tools model, registration adds ``_scvi_*`` columns to ``adata.obs`` (integer
        codes of the categorical fields) and a ``_scvi_manager_uuid``/``_scvi_uuid`` entry to
        ``adata.uns``; nothing else in ``adata`` changes.

        Parameters
        ----------
        adata
            Cells x genes AnnData with raw counts.
        condition_key
            Column of ``adata.obs`` with each cell's condition (perturbation or control).
        control_category
            The label, or list of labels, of ``adata.obs[condition_key]`` that mean
            "control" (integers are compared with the column's values as strings, so
            ``0`` names the controls of an integer column). Every other label is a
            perturbation; labels that differ from a control label only by case or spaces
            (``"Control"``, ``"control "``) raise a warning. At least two cells must be
            controls.
        layer
            Layer with the raw counts; ``None`` uses ``adata.X``.
        batch_key
            Column of ``adata.obs`` with batches; one-hot encoded into every network.
        size_factor_key
            Column of ``adata.obs`` with positive size factors, used as library size instead
            of the observed total counts.
        categorical_covariate_keys
            Columns of ``adata.obs`` with categorical covariates (one-hot into every network).
        continuous_covariate_keys
            Columns of ``adata.obs`` with continuous covariates (into every network).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Raises
        ------
        KeyError
            An obs key or layer that does not exist.
        ValueError
            A missing control label, fewer than two control cells, no perturbed cells,
            missing values, empty conditions, duplicated ``adata.obs_names`` or
            ``adata.var_names``, the condition column also given as batch or covariate,
            counts with NaN, infinite, negative values, values above ``2**31 - 1`` or
            all-zero cells, or counts in a scipy sparse array (``csr_array``) instead of a
            sparse matrix.

        """
        control_category = _validation.normalize_control_category(control_category)
        if kwargs.get("source_registry") is not None:
            # ComparativeVI.load registers an AnnData for a saved model: the checks of a query.
            _validation.check_query(adata, kwargs["source_registry"])
        else:
            _validation.check_distinct_keys(
                condition_key,
                batch_key,
                size_factor_key,
                categorical_covariate_keys,
                continuous_covariate_keys,
            )
            _validation.check_unique_obs_names(adata)
            _validation.check_unique_var_names(adata)
            _validation.check_counts(adata, layer)
            _validation.check_condition(adata, condition_key, control_category)
            _validation.check_covariates(
                adata,
                batch_key,
                size_factor_key,
                categorical_covariate_keys,
                continuous_covariate_keys,
            )
        setup_method_args = cls._get_setup_method_args(**locals())
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.CONDITION_KEY, condition_key),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        rna_layer: str | None = None,
        *,
        condition_key: str,
        control_category: str | Sequence[str],
        batch_key: str | None = None,
        size_factor_key: str | None = None,
        categorical_covariate_keys: Sequence[str] | None = None,
        continuous_covariate_keys: Sequence[str] | None = None,
        modalities: dict[str, str] | None = None,
        **kwargs,
    ) -> None:
        """Register a MuData's RNA counts, condition and covariates with ComparativeVI.

        The model uses the RNA modality's counts only; other modalities (guide counts,
        protein) are carried along with the cells, not modelled. Each obs key is read from
        ``mdata.mod[modality].obs`` when ``modalities`` names a modality for its argument,
        else from ``mdata.obs``. The checks of :meth:`setup_anndata` run first, on the
        object that holds each field, and nothing is written when one fails; registration
        then adds ``_scvi_*`` columns to the obs it reads and ``_scvi_*`` entries to
        ``mdata.uns``, as for an AnnData.

        Parameters
        ----------
        mdata
            MuData whose RNA modality holds raw counts for every cell of ``mdata``.
        rna_layer
            Layer of the RNA modality with the raw counts; ``None`` uses its ``.X``.
        condition_key
            Obs column with each cell's condition (perturbation or control).
        control_category
            The label, or list of labels, of the condition column that mean "control".
            Every other label is a perturbation.
        batch_key
            Obs column with batches; one-hot encoded into every network.
        size_factor_key
            Obs column with positive size factors, used as library size instead of the
            observed total counts.
        categorical_covariate_keys
            Obs columns with categorical covariates (one-hot into every network).
        continuous_covariate_keys
            Obs columns with continuous covariates (into every network).
        modalities
            Maps the arguments above (``"rna_layer"``, ``"condition_key"``, ``"batch_key"``,
            ``"size_factor_key"``, ``"categorical_covariate_keys"``,
            ``"continuous_covariate_keys"``) to the modality that holds them, e.g.
            ``{"rna_layer": "rna", "condition_key": "rna"}``. ``"rna_layer"`` is required;
            an argument left out is read from ``mdata.obs``.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Raises
        ------
        KeyError
            An obs key or layer that does not exist.
        ValueError
            ``modalities`` without ``"rna_layer"``, naming a modality that ``mdata`` lacks,
            or a modality without every cell of ``mdata`` in order; duplicated
            ``mdata.obs_names``, a missing control label,
            no perturbed cells, missing values, empty conditions, or counts with NaN,
            infinite, negative values or all-zero cells.

        """
        control_category = _validation.normalize_control_category(control_category)
        setup_method_args = cls._get_setup_method_args(**locals())
        _validation.modality_names(mdata, modalities)
        # Fills in None for every setup argument without a modality (read from mdata.obs) and
        # rejects mappings for arguments that setup_mudata does not have.
        mods = cls._create_modalities_attr_dict(modalities, setup_method_args)
        args = setup_method_args["setup_args"]

        def checked_at(argument: str):
            return _validation.registered_obs(mdata, args, argument)

        if kwargs.get("source_registry") is not None:
            # ComparativeVI.load registers a MuData for a saved model: the checks of a query.
            _validation.check_query(mdata, kwargs["source_registry"])
        else:
            _validation.check_distinct_keys(
                condition_key,
                batch_key,
                size_factor_key,
                categorical_covariate_keys,
                continuous_covariate_keys,
            )
            with _validation.located("mdata"):
                _validation.check_unique_obs_names(mdata)
            with _validation.located(_validation.location(mdata, args, "rna_layer")):
                _validation.check_unique_var_names(mdata.mod[mods.rna_layer])
                _validation.check_counts(mdata.mod[mods.rna_layer], rna_layer)
            with _validation.located(_validation.location(mdata, args, "condition_key")):
                _validation.check_condition(
                    checked_at("condition_key"), condition_key, control_category
                )
            # Covariates may each live in another modality: check each where it is read.
            for argument, check_args in {
                "batch_key": (batch_key, None, None, None),
                "size_factor_key": (None, size_factor_key, None, None),
                "categorical_covariate_keys": (None, None, categorical_covariate_keys, None),
                "continuous_covariate_keys": (None, None, None, continuous_covariate_keys),
            }.items():
                with _validation.located(_validation.location(mdata, args, argument)):
                    _validation.check_covariates(checked_at(argument), *check_args)

        mudata_fields = [
            MuDataLayerField(
                REGISTRY_KEYS.X_KEY,
                rna_layer,
                mod_key=mods.rna_layer,
                is_count_data=True,
                mod_required=True,
            ),
            MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=mods.batch_key),
            MuDataCategoricalObsField(
                REGISTRY_KEYS.CONDITION_KEY, condition_key, mod_key=mods.condition_key
            ),
            MuDataNumericalObsField(
                REGISTRY_KEYS.SIZE_FACTOR_KEY,
                size_factor_key,
                mod_key=mods.size_factor_key,
                required=False,
            ),
            MuDataCategoricalJointObsField(
                REGISTRY_KEYS.CAT_COVS_KEY,
                categorical_covariate_keys,
                mod_key=mods.categorical_covariate_keys,
            ),
            MuDataNumericalJointObsField(
                REGISTRY_KEYS.CONT_COVS_KEY,
                continuous_covariate_keys,
                mod_key=mods.continuous_covariate_keys,
            ),
        ]
        adata_manager = AnnDataManager(fields=mudata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs) -> ComparativeVI:
        """Load a model saved with :meth:`save`, optionally onto a new AnnData.

        Parameters
        ----------
        dir_path
            Folder the model was saved to.
        adata
            AnnData to attach, with the training genes. If it holds them in another order,
            the model holds a copy of it with the genes put in training order
            (``model.adata`` is then that copy, and ``adata`` itself is not modified), so
            embeddings and expression come out in training gene order. ``None`` uses the
            AnnData saved with the model.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``,
            ``device``, ``prefix``, ...).

        Raises
        ------
        ValueError
            ``dir_path`` holds no ``model.pt``, a truncated or corrupt one, or a model of
            another class (e.g. a :class:`scvi.external.ContrastiveVI`); ``adata`` has other
            genes than the model, conditions, batches or covariate categories it was not
            trained with, or data that the checks of :meth:`setup_anndata` refuse (it may
            hold controls only or perturbed cells only). Nothing is written to ``adata``
            then.

        """
        model_path = os.path.join(str(dir_path), f"{kwargs.get('prefix') or ''}model.pt")
        try:
            attr_dict, var_names = read_saved_model(dir_path, prefix=kwargs.get("prefix"))
            registry = attr_dict["registry_"]
        except FileNotFoundError as error:
            raise ValueError(
                f"There is no {model_path}; pass the folder that ComparativeVI.save wrote."
            ) from error
        except (
            OSError,
            EOFError,
            RuntimeError,
            pickle.UnpicklingError,
            AttributeError,
            KeyError,
            TypeError,
        ) as error:
            raise ValueError(
                f"{model_path} could not be read ({type(error).__name__}: {error}): the file "
                "is truncated or corrupt, or was not written by ComparativeVI.save. Save the "
                "model again."
            ) from error
        _validation.check_saved_model_class(dir_path, registry, cls.__name__)
        if adata is not None:
            adata = _validation.check_same_genes(adata, var_names, reorder=True)
        # scvi-tools then calls setup_anndata (setup_mudata) with the saved registry, which
        # runs the checks of a query before anything is registered in adata.
        return super().load(dir_path, adata=adata, **kwargs)

    def _validate_anndata(
        self, adata: AnnData | None = None, copy_if_view: bool = True
    ) -> AnnData:
        """Check an AnnData given to a query, before scvi-tools transfers the registration.

        A new AnnData gets the checks of setup (:func:`_validation.check_query`) the first
        time; every AnnData (the training one included) must still hold the condition labels
        it was registered with.
        """
        if adata is not None and adata is not self.adata:
            setup_args = self.adata_manager.registry["setup_args"]
            _validation.check_data_kind(adata, setup_args)
            if isinstance(adata, AnnData):
                # scvi-tools transfers the registration by the number of genes only, so the
                # same genes in another order would be encoded with the wrong weights.
                _validation.check_same_genes(adata, self.adata.var_names)
            else:
                # Only the RNA modality is modelled; other modalities may differ.
                with _validation.located(_validation.location(adata, setup_args, "rna_layer")):
                    _validation.check_same_genes(
                        _validation.registered_counts(adata, setup_args)[0],
                        self._gene_names(self.adata),
                    )
            if not self._is_registered_here(adata):
                # First use of this AnnData (or a copy of a registered one, which scvi-tools
                # registers again): the checks of setup (counts, cell names, covariates,
                # known categories) before scvi-tools registers anything in it.
                _validation.check_query(
                    adata, self.adata_manager.registry, self.module.gene_likelihood
                )
            else:
                with _validation.located("mdata" if isinstance(adata, MuData) else "adata"):
                    _validation.check_unique_obs_names(adata)
                # With a MuData the condition column may live in a modality's obs.
                location = _validation.location(adata, setup_args, "condition_key")
                with _validation.located(location):
                    _validation.check_known_conditions(
                        _validation.registered_obs(adata, setup_args, "condition_key"),
                        setup_args["condition_key"],
                        self.conditions,
                    )
        adata = super()._validate_anndata(adata, copy_if_view)
        # The model reads the registered codes; refuse a condition column relabelled since.
        manager = self.get_anndata_manager(adata, required=True)
        _validation.check_registered_labels(
            adata,
            manager.registry["setup_args"],
            self.conditions,
            manager.get_from_registry(REGISTRY_KEYS.CONDITION_KEY),
        )
        return adata

    def _is_registered_here(self, adata: AnnData | MuData) -> bool:
        """Tell whether this model registered ``adata`` itself (not a copy of it).

        Unlike :meth:`get_anndata_manager`, which registers a copy as it finds it, this
        never writes to ``adata``.
        """
        store = type(self)._per_instance_manager_store.get(self.id, {})
        manager = store.get(adata.uns.get(_SCVI_UUID_KEY))
        return manager is not None and manager.adata is adata

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
        :func:`~compvi._device_data.choose_data_path`; ``data_path="auto" | "device" |
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

    # -------------------------------------------------------------- conditions
    @property
    def control_categories(self) -> list[str]:
        """Labels of the registered condition that mean "control"."""
        return list(self.adata_manager.registry["setup_args"]["control_category"])

    @property
    def conditions(self) -> list[str]:
        """All labels of the registered condition, in code order."""
        mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.CONDITION_KEY)
        return [str(c) for c in mapping.categorical_mapping]

    def _control_codes(self) -> list[int]:
        return [i for i, c in enumerate(self.conditions) if c in self.control_categories]

    def _gene_names(self, adata: AnnData | MuData) -> pd.Index:
        """Genes of the modelled counts: ``var_names`` of the RNA modality for a MuData."""
        setup_args = self.adata_manager.registry["setup_args"]
        return _validation.registered_counts(adata, setup_args)[0].var_names

    def _registered_obs(self, adata: AnnData | MuData, argument: str) -> pd.DataFrame:
        """Return the obs frame a setup argument's column is read from (a modality's)."""
        setup_args = self.adata_manager.registry["setup_args"]
        return _validation.registered_obs(adata, setup_args, argument).obs

    def _is_perturbed(self, adata_manager: AnnDataManager) -> np.ndarray:
        codes = np.asarray(adata_manager.get_from_registry(REGISTRY_KEYS.CONDITION_KEY))
        return ~np.isin(codes.ravel(), self._control_codes())

    # ----------------------------------------------------------------- training
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 128,
        balancing: Literal["mgda", "sum"] = "sum",
        leakage_bound: float | None = DEFAULT_BOUNDS[CONSTRAINTS.LEAKAGE],
        dependence_bound: float | None = DEFAULT_BOUNDS[CONSTRAINTS.DEPENDENCE],
        background_shift_bound: float | None = DEFAULT_BOUNDS[CONSTRAINTS.BACKGROUND_SHIFT],
        edge_bound: float | None = 2.0,
        leakage_weight: float | None = None,
        multiplier_lr: float = DEFAULT_MULTIPLIER_LR,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        train_size: float = 0.9,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        load_sparse_tensor: bool = False,
        early_stopping: bool = False,
        datasplitter_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        r"""Fit the model on paired minibatches of control and perturbed cells.

        Control and perturbed cells come from the registered condition; each minibatch holds
        ``batch_size`` cells of each group. Three constraints keep the two spaces apart, each
        a bound in scale-free units enforced by a Lagrange multiplier (no penalty weight to
        tune), measured on the posterior means without dropout noise (what
        :meth:`get_latent_representation` returns):

        - **leakage**: control cells' salient energy relative to perturbed cells';
        - **dependence**: normalized HSIC between the background and salient spaces of
          perturbed cells (Gaussian kernels, so nonlinear dependence counts);
        - **background shift**: normalized HSIC between the background space and the
          condition label, which compares every perturbation's background distribution
          with the controls' and with each other's.

        A model trained again goes on from where its multipliers (and the sparse prior's
        edge bound) stood. When training ends with a constraint above its bound, a warning
        names it and what to do. Per-epoch curves land in ``model.history``:
        ``loss_control_train`` and ``loss_perturbed_train`` (mean negative ELBO of each
        group), ``mgda_weight`` (the control objective's weight), ``kl_weight``, and for
        each constraint ``{name}_train`` (always), ``{name}_bound`` and
        ``{name}_multiplier`` (when bounded), with ``name`` one of ``leakage``,
        ``dependence``, ``background_shift`` and, with the sparse prior, ``edges``
        (expected edges per perturbation). :func:`compvi.pl.training_diagnostics` draws
        them.

        Parameters
        ----------
        max_epochs
            Passes over the larger group. ``None``: ``min(400, round(20000 / n_cells * 400))``.
        batch_size
            Cells of each group per minibatch.
        balancing
            ``"sum"`` (the default) adds the control and perturbed objectives. ``"mgda"``
            weighs them by the min-norm combination of their gradients on the decoder's
            output layer (Sener & Koltun, 2018). The two groups' cells are disjoint, so
            those gradients are nearly orthogonal and MGDA acts as a reweighting by
            gradient size; with the constraints of this version it kept more of the
            perturbation in the background space than the sum on Kang 2018, and matched it
            on simulated screens (``benchmarks/results/disentanglement``).
        leakage_bound
            The largest mean squared salient posterior mean of control cells, relative to
            that of perturbed cells: ``0.02`` lets controls keep 2% of the perturbed cells'
            salient energy (about 14% of their distance from the origin). Controls decode
            with a salient code of 0, so what they keep there is salient signal the model
            cannot attribute. ``None`` turns the constraint off.
        dependence_bound
            The largest normalized HSIC (kernel alignment; about 0 for independent spaces, 1
            for a deterministic relation) between the background and salient posterior
            means of perturbed cells in a minibatch. The priors make the spaces
            independent; the bound keeps surplus dimensions from copying one space into the
            other. ``None`` turns it off.
        background_shift_bound
            The largest normalized HSIC between the background posterior means and the
            condition label of the cells in a minibatch (controls included). A randomized
            screen gives every perturbation the background distribution of the controls,
            which is what the prior assumes; the bound keeps a strong perturbation from
            moving its cells in the background space too (where cell type should be all
            that is left). In a screen whose perturbations change which cell states are
            present (differentiation), that change then shows in the salient space, where
            it belongs to the perturbation; ``None`` turns the constraint off.
        edge_bound
            Sparse prior only (ignored by the others): the largest expected number of
            edges per perturbation in the perturbation → factor graph, enforced by dual
            ascent like the other bounds. Each edge lets a perturbation shift one salient
            factor; fewer edges force each perturbation onto fewer, more interpretable
            factors. ``None`` leaves the graph unconstrained.
        leakage_weight
            Fixed penalty weight on the (relative) leakage instead of the constraint, for
            ablations; needs ``leakage_bound=None``.
        multiplier_lr
            Dual step size: each training step multiplies a multiplier by at most
            :math:`e^{\pm\text{multiplier\_lr}}`, following the running mean of its
            measure relative to the bound.
        accelerator, devices
            Lightning accelerator and devices. For distributed data-parallel training pass
            ``strategy="ddp"`` too (see ``**trainer_kwargs``).
        train_size
            Fraction of each group used for training.
        validation_size
            Fraction of each group used for validation; ``None`` uses the rest.
        shuffle_set_split
            Shuffle cells before splitting them into sets.
        load_sparse_tensor
            Load sparse counts as sparse tensors (faster transfers to a GPU).
        early_stopping
            Stop when the validation ELBO stops improving.
        datasplitter_kwargs
            More arguments of the data splitter (``ComparativeDataSplitter``).
        plan_kwargs
            More arguments of the training plan (``ComparativeTrainingPlan``)
            (``lr``, ``n_epochs_kl_warmup``, ...). The KL weight rises linearly over
            ``n_epochs_kl_warmup`` epochs, by default half of ``max_epochs`` (scvi-tools
            uses 400 whatever the run's length, which would leave a 100-epoch run with its
            priors at a quarter of their weight). With a learned prior:
            ``prior_lr`` (the prior parameters' learning rate, default ``1e-2``) and, for
            the sparse prior,
            ``edge_anneal_fraction`` (the share of ``max_epochs`` over which the edge bound
            falls from the number of salient factors to ``edge_bound``, default 0.5).
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer`. ``strategy="ddp"`` (with ``devices`` > 1)
            trains one process per device: each loads its shard of every global minibatch of
            ``batch_size * devices`` cells per group, the processes average the gradients of
            the MGDA weight and the constraint measures, and batch norm and the minibatch
            statistics (dependence, background shift) use the global minibatch, so the run
            follows a one-device run with ``batch_size * devices`` cells per group.
            Lightning's ``"ddp"`` relaunches the running script once per device: call it
            from a script, or use ``"ddp_notebook"`` in a notebook. Early stopping is off
            under DDP (scvi-tools).

        """
        max_epochs, batch_size = _validation.check_train_arguments(
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_size=train_size,
            validation_size=validation_size,
            early_stopping=early_stopping,
        )
        if max_epochs is None:
            max_epochs = get_max_epochs_heuristic(self.adata.n_obs)

        perturbed = self._is_perturbed(self.adata_manager)
        data_splitter = self._data_splitter_cls(
            self.adata_manager,
            control_indices=np.flatnonzero(~perturbed),
            perturbed_indices=np.flatnonzero(perturbed),
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            load_sparse_tensor=load_sparse_tensor,
            batch_size=batch_size,
            **(datasplitter_kwargs or {}),
        )
        plan_kwargs = dict(plan_kwargs or {})
        if "n_epochs_kl_warmup" not in plan_kwargs and "n_steps_kl_warmup" not in plan_kwargs:
            plan_kwargs["n_epochs_kl_warmup"] = default_kl_warmup_epochs(max_epochs)
        sparse = CONSTRAINTS.EDGES in self.module.salient_prior.measures()
        plan_kwargs.update(
            balancing=balancing,
            leakage_bound=leakage_bound,
            leakage_weight=leakage_weight,
            dependence_bound=dependence_bound,
            background_shift_bound=background_shift_bound,
            edge_bound=edge_bound if sparse else None,
            multiplier_lr=multiplier_lr,
        )
        # A model trained again goes on from where its constraints stood.
        plan_kwargs.setdefault("multipliers", self._constraint_state.get("multipliers"))
        if sparse:
            plan_kwargs.setdefault("edge_anneal_start", self._constraint_state.get("edge_bound"))
        training_plan = self._training_plan_cls(self.module, **plan_kwargs)
        trainer_kwargs.setdefault("early_stopping", early_stopping)
        runner = self._train_runner_cls(
            self,
            training_plan=training_plan,
            data_splitter=data_splitter,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            **trainer_kwargs,
        )
        result = runner()
        self._constraint_state = {
            "multipliers": training_plan.multipliers(),
            "edge_bound": (
                training_plan.constraints[CONSTRAINTS.EDGES].bound
                if CONSTRAINTS.EDGES in training_plan.constraints
                else None
            ),
        }
        self._warn_violated_constraints(training_plan)
        return result

    def _warn_violated_constraints(self, training_plan: ComparativeTrainingPlan) -> None:
        """Warn about each constraint whose last training epoch ended above its bound."""
        violated = []
        for name, constraint in training_plan.constraints.items():
            curve = self.history.get(f"{name}_train") if self.history else None
            if curve is None or curve.empty:
                continue
            # The last tenth of the epochs: one epoch's mean of a few minibatches is noisy.
            tail = curve.iloc[-max(1, len(curve) // 10) :, 0].to_numpy(dtype=float)
            measure = float(tail.mean())
            if measure > VIOLATION_TOLERANCE * constraint.bound:
                violated.append(
                    f"{name} = {measure:.3g} > {name}_bound = {constraint.bound:.3g} "
                    f"({CONSTRAINT_MEANINGS[name]})"
                )
        if violated:
            warnings.warn(
                "Training ended with constraints above their bounds: "
                + "; ".join(violated)
                + ". Train longer (model.train() again goes on from the current multipliers), "
                "raise multiplier_lr, or loosen the bound; model.history and "
                "compvi.pl.training_diagnostics(model) show the measures and multipliers.",
                UserWarning,
                stacklevel=3,
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
