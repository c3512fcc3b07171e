"""Parameter text shared by several docstrings (docrep, as in scvi-tools).

A docstring decorated with ``@doc.dedent`` reads ``%(name)s`` as the entry ``name`` below.
"""

from __future__ import annotations

from docrep import DocstringProcessor

_show_save = """\
show
    Show the figure; ``None`` shows it unless ``save`` is given, as scanpy does.
save
    Write the figure to this path."""

_query_cells = """\
adata
    AnnData with the training genes; ``None`` uses the training data.
indices
    Cells to use, as positions or a boolean mask with one entry per cell; ``None``
    uses all."""

_salient_groups = """\
adata
    AnnData with the salient representation in :attr:`~anndata.AnnData.obsm`.
groupby
    Column of ``adata.obs`` that groups the cells.
salient_key
    Key of the salient representation in ``adata.obsm``."""

_held_out_split = """\
test_size
    Fraction of the rows held out for scoring, in (0, 1).
random_state
    Seed of the train/test split."""

_held_out_r2 = """\
Mean held-out :math:`R^2` over the non-constant columns of ``true``; at most 1."""

_true_factors = """\
true
    Ground-truth latent, ``(n_cells, d_true)``; a 1-D array is one column. No column
    may be constant."""

doc = DocstringProcessor(
    show_save=_show_save,
    query_cells=_query_cells,
    salient_groups=_salient_groups,
    held_out_split=_held_out_split,
    held_out_r2=_held_out_r2,
    true_factors=_true_factors,
)
