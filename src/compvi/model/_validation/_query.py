"""Checks on data brought to a trained or saved model (queries)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import scvi
from anndata import AnnData
from mudata import MuData

from ._counts import check_counts, check_looks_like_counts
from ._mudata import located, location, registered_counts, registered_obs
from ._obs import check_covariates, check_known_conditions, check_obs_key, check_unique_obs_names


def check_saved_model_class(dir_path: str, saved_registry: Mapping, model_class: str) -> None:
    """Refuse a folder saved by another scvi-tools model class, naming the class to load it with.

    scvi-tools records the saving class in ``registry["model_name"]`` and refuses a mismatch
    only with "It appears you are loading a model from a different class.", after it has
    already registered the AnnData with the wrong class.
    """
    saved = saved_registry.get("model_name")
    if saved is None or saved == model_class:
        return
    # Name the class with its import path when it is one of scvi-tools' own.
    loader = saved
    for namespace in ("model", "external"):
        if hasattr(getattr(scvi, namespace), saved):
            loader = f"scvi.{namespace}.{saved}"
            break
    raise ValueError(
        f"{dir_path} holds a {saved} model, not a {model_class}; load it with "
        f"{loader}.load({str(dir_path)!r}, adata=...)."
    )


# --------------------------------------------------------------------- queries
def registered_categories(registry: Mapping) -> dict[str, dict[str, list[str]]]:
    """Categories of the batch and categorical covariates a model was registered with.

    Returns ``{argument: {obs key: categories}}`` for ``batch_key`` and
    ``categorical_covariate_keys``, from a registry (``model.adata_manager.registry`` or the
    one saved with a model).
    """
    fields = registry["field_registries"]
    setup_args = registry["setup_args"]
    known: dict[str, dict[str, list[str]]] = {}
    batch = fields.get("batch", {}).get("state_registry", {})
    if setup_args.get("batch_key") is not None and "categorical_mapping" in batch:
        known["batch_key"] = {
            setup_args["batch_key"]: [str(c) for c in batch["categorical_mapping"]]
        }
    covariates = fields.get("extra_categorical_covs", {}).get("state_registry", {})
    if covariates.get("mappings"):
        known["categorical_covariate_keys"] = {
            key: [str(c) for c in categories] for key, categories in covariates["mappings"].items()
        }
    return known


def check_known_categories(
    adata: AnnData, argument: str, categories: Mapping[str, Sequence[str]]
) -> None:
    """Refuse batch or covariate categories the model was not trained with."""
    for key, known in categories.items():
        column = check_obs_key(adata, key, argument)
        unseen = sorted(set(column.astype(str).unique()) - set(known))
        if unseen:
            raise ValueError(
                f"adata.obs[{key!r}] ({argument}) has categories the model was not trained "
                f"with: {unseen[:10]}. The model has no weights for them; keep only cells of "
                f"the trained categories ({list(known)[:10]})."
            )


def check_query(
    adata: AnnData | MuData, registry: Mapping, gene_likelihood: str | None = None
) -> None:
    """Run the checks of setup on an AnnData (or MuData) given to a trained model.

    Run by every query with a new AnnData (``get_*``, scores, DE, ``add_results``) and by
    :meth:`ComparativeVI.load`, before scvi-tools transfers the registration, so a refused
    AnnData is left as it was. Unlike setup, the AnnData may hold controls only or
    perturbed cells only, but every condition, batch and covariate category must be one the
    model was trained with.
    """
    setup_args = registry["setup_args"]
    is_mudata = isinstance(adata, MuData)
    with located("mdata" if is_mudata else "adata"):
        check_unique_obs_names(adata)
    counts, layer = registered_counts(adata, setup_args)
    with located(location(adata, setup_args, "rna_layer")):
        check_counts(counts, layer)
        check_looks_like_counts(counts, layer, gene_likelihood)
    with located(location(adata, setup_args, "condition_key")):
        conditions = registry["field_registries"]["condition"]["state_registry"]
        check_known_conditions(
            registered_obs(adata, setup_args, "condition_key"),
            setup_args["condition_key"],
            [str(c) for c in conditions["categorical_mapping"]],
        )
    covariate_args = {
        "batch_key": (setup_args.get("batch_key"), None, None, None),
        "size_factor_key": (None, setup_args.get("size_factor_key"), None, None),
        "categorical_covariate_keys": (
            None,
            None,
            setup_args.get("categorical_covariate_keys"),
            None,
        ),
        "continuous_covariate_keys": (
            None,
            None,
            None,
            setup_args.get("continuous_covariate_keys"),
        ),
    }
    known = registered_categories(registry)
    for argument, check_args in covariate_args.items():
        holder = registered_obs(adata, setup_args, argument)
        with located(location(adata, setup_args, argument)):
            check_covariates(holder, *check_args)
            if argument in known:
                check_known_categories(holder, argument, known[argument])


@contextmanager
def _restored_on_error(adata) -> Iterator[None]:
    """Remove what a failed call added to ``adata``'s obs, obsm and uns (and its modalities').

    A query registers a new AnnData with scvi-tools (``_scvi_*`` columns, ``_scvi_uuid``)
    before it can count its cells; when the call then fails, the AnnData goes back to the
    keys it had. Only keys are compared, so this costs nothing on success.
    """
    if not isinstance(adata, AnnData | MuData):
        yield
        return
    holders = [adata, *(adata.mod.values() if isinstance(adata, MuData) else [])]
    before = [(set(h.obs.columns), set(h.obsm.keys()), set(h.uns.keys())) for h in holders]
    try:
        yield
    except Exception:
        for holder, (obs, obsm, uns) in zip(holders, before, strict=True):
            added = [column for column in holder.obs.columns if column not in obs]
            if added:
                holder.obs.drop(columns=added, inplace=True)
            for key in [key for key in holder.obsm.keys() if key not in obsm]:
                del holder.obsm[key]
            for key in [key for key in holder.uns.keys() if key not in uns]:
                del holder.uns[key]
        raise


def leaves_adata_untouched_on_error(method: Callable) -> Callable:
    """Decorate a query so that, when it fails, its ``adata`` keeps the keys it had."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        adata = kwargs["adata"] if "adata" in kwargs else (args[0] if args else None)
        with _restored_on_error(adata):
            return method(self, *args, **kwargs)

    return wrapper


def check_registered_labels(
    adata: AnnData | MuData, setup_args: Mapping, conditions: Sequence[str], codes
) -> None:
    """Refuse a condition column relabelled after registration.

    The model reads the registered codes (``_scvi_condition``), so after a relabelling the
    scores, DE groups and controls would follow the old labels while ``obs`` shows new ones.
    """
    key = setup_args["condition_key"]
    with located(location(adata, setup_args, "condition_key")):
        obs = registered_obs(adata, setup_args, "condition_key").obs
        if key not in obs:
            raise KeyError(
                f"condition_key={key!r} is no longer a column of adata.obs, which the model "
                "was registered with; restore it."
            )
        live = obs[key].astype(str).to_numpy()
        registered = np.asarray(conditions, dtype=object)[np.asarray(codes).ravel()]
        changed = np.flatnonzero(live != registered.astype(str))
        if changed.size:
            first = changed[0]
            raise ValueError(
                f"adata.obs[{key!r}] changed after the AnnData was registered: {changed.size} "
                f"cells have another label now (e.g. cell {obs.index[first]!r}: registered "
                f"{registered[first]!r}, now {live[first]!r}). The model reads the registered "
                "labels, so results would not match the column. Restore the labels, or pass "
                "adata.copy(), which the model registers afresh with its current labels (to "
                "train on new labels, set up and train a new model)."
            )
