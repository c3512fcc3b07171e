"""Where each registered field lives in a MuData, and errors that say so."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from anndata import AnnData
from mudata import MuData

# --------------------------------------------------------------------------- MuData
# ComparativeVI.setup_mudata reuses the AnnData checks above on the modality (or the MuData)
# that holds each field; the helpers below find that object and rename ``adata`` in messages.


def modality_names(mdata: MuData, modalities: Mapping[str, str | None] | None) -> dict:
    """Check the ``modalities`` of ``setup_mudata``: ``rna_layer`` given, every name known."""
    modalities = dict(modalities or {})
    if modalities.get("rna_layer") is None:
        raise ValueError(
            "modalities must name the modality holding the RNA counts, e.g. "
            f"modalities={{'rna_layer': 'rna'}} (modalities of mdata: {list(mdata.mod)})."
        )
    for argument, modality in modalities.items():
        if modality is not None and modality not in mdata.mod:
            raise ValueError(
                f"modalities[{argument!r}]={modality!r} is not a modality of mdata "
                f"(modalities: {list(mdata.mod)})."
            )
        if modality is not None and not mdata.mod[modality].obs_names.equals(mdata.obs_names):
            # The data loader indexes every field by the MuData's cells, so a modality that
            # lacks cells, or orders them differently, would pair counts with wrong labels.
            raise ValueError(
                f"mdata.mod[{modality!r}] ({argument}) must hold every cell of mdata in the "
                f"same order ({mdata.mod[modality].n_obs} vs {mdata.n_obs} cells); subset "
                "mdata to the cells that every modality has first."
            )
    return modalities


def registered_counts(adata: AnnData | MuData, setup_args: Mapping) -> tuple[AnnData, str | None]:
    """Return the AnnData (a MuData's RNA modality) and layer holding the counts."""
    if isinstance(adata, MuData):
        return adata.mod[setup_args["modalities"]["rna_layer"]], setup_args["rna_layer"]
    return adata, setup_args["layer"]


def registered_obs(adata: AnnData | MuData, setup_args: Mapping, argument: str):
    """Return the object whose ``.obs`` holds a setup argument's column.

    As in scvi-tools' MuData fields: the modality named in ``modalities`` for that argument,
    else the MuData itself.
    """
    if isinstance(adata, MuData):
        modality = (setup_args.get("modalities") or {}).get(argument)
        return adata if modality is None else adata.mod[modality]
    return adata


def location(adata: AnnData | MuData, setup_args: Mapping, argument: str) -> str:
    """How messages name the object holding a setup argument's field (``adata`` for AnnData)."""
    if not isinstance(adata, MuData):
        return "adata"
    modality = (setup_args.get("modalities") or {}).get(argument)
    return "mdata" if modality is None else f"mdata.mod[{modality!r}]"


@contextmanager
def located(name: str) -> Iterator[None]:
    """Re-raise the AnnData checks' errors naming ``name`` (a MuData location) for ``adata``.

    The counts' ``layer`` argument is ``rna_layer`` in ``setup_mudata``, so messages say so.
    """
    try:
        yield
    except (KeyError, ValueError) as error:
        if name == "adata" or not error.args or not isinstance(error.args[0], str):
            raise
        message = error.args[0].replace("setup_anndata(adata,", "setup_mudata(mdata,")
        # ``model.adata`` is the MuData itself: point it at the same modality instead.
        message = re.sub(r"(?<!\.)\badata\b", name, message)
        message = message.replace("model.adata.", f"model.adata{name.removeprefix('mdata')}.")
        message = re.sub(r"\blayer=", "rna_layer=", message)
        raise type(error)(message) from None


def check_data_kind(adata: AnnData | MuData, setup_args: Mapping) -> None:
    """Refuse an AnnData for a model set up with ``setup_mudata``, and a MuData for the reverse."""
    trained_on_mudata = "modalities" in setup_args
    if isinstance(adata, MuData) == trained_on_mudata:
        return
    if trained_on_mudata:
        raise ValueError(
            "The model was set up with setup_mudata; pass a MuData with the same modalities "
            f"({setup_args['modalities']}), not an AnnData."
        )
    raise ValueError(
        "The model was set up with setup_anndata; pass an AnnData (e.g. the RNA modality, "
        "mdata.mod['rna']), not a MuData."
    )
