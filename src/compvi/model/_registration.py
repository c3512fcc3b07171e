"""Registering data with :class:`~compvi.ComparativeVI`: setup, loading and query checks."""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from typing import Self

from anndata import AnnData
from mudata import MuData
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

from .._constants import (
    REGISTRY_KEYS,
)
from . import _validation
from ._base import ComparativeModelBase
from ._scvi_compat import read_saved_model


class RegistrationMixin(ComparativeModelBase):
    """Register AnnData and MuData, check every AnnData a query brings, load saved models."""

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
            _validation.warn_covariates_that_split_groups(
                adata.obs[condition_key],
                control_category,
                {
                    label: adata.obs[key]
                    for label, _, key in _categorical_covariates(
                        batch_key, categorical_covariate_keys
                    )
                },
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
            _validation.warn_covariates_that_split_groups(
                checked_at("condition_key").obs[condition_key],
                control_category,
                {
                    label: checked_at(argument).obs[key]
                    for label, argument, key in _categorical_covariates(
                        batch_key, categorical_covariate_keys
                    )
                },
            )

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
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs) -> Self:
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


def _categorical_covariates(
    batch_key: str | None, categorical_covariate_keys: list[str] | None
) -> list[tuple[str, str, str]]:
    """Each categorical covariate column: how messages name it, its setup argument, its key."""
    named = [("batch_key", "batch_key", batch_key)] if batch_key is not None else []
    return named + [
        (f"categorical_covariate_keys[{i}]", "categorical_covariate_keys", key)
        for i, key in enumerate(categorical_covariate_keys or [])
    ]
