"""The ``compvi demo`` job: simulate a screen, fit ComparativeVI, report recovery, plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData

from .. import metrics
from ..data import simulate_screen
from ..model import ComparativeVI
from ..pl import embeddings
from ..tl import umap
from ._staging import StagedOutputs


def recovery_table(adata: AnnData, *, salient_key: str, background_key: str) -> pd.DataFrame:
    """Block-wise recovery of a simulated screen's known latents, beside floors.

    Parameters
    ----------
    adata
        Output of :func:`compvi.data.simulate_screen` with learned latents in ``obsm``.
    salient_key, background_key
        ``obsm`` keys of the learned salient and background representations.

    Returns
    -------
    One row per measure: affine R² of each block (higher is better), leakage R² across
    blocks (lower is better), and the salient-space MCC, each beside the same measure for
    PCA of log counts (a floor for R²) or a random rotation of the truth (a floor for MCC).

    """
    perturbed = (adata.obsm["true_salient"] != 0).any(axis=1)
    true_b, true_s = adata.obsm["true_background"], adata.obsm["true_salient"]
    learned_b, learned_s = adata.obsm[background_key], adata.obsm[salient_key]
    # PCA with as many components as the learned block: what a linear method gets for free.
    # Leading components are the same whatever their number, so one PCA serves both blocks.
    pca = metrics.log_counts_pca(adata.X, max(learned_b.shape[1], learned_s.shape[1]))
    pca_b, pca_s = pca[:, : learned_b.shape[1]], pca[:, : learned_s.shape[1]]
    leak = metrics.leakage(true_b, true_s, learned_b, learned_s, perturbed)
    rows = [
        (
            "background affine R²",
            metrics.affine_r2(true_b, learned_b),
            metrics.affine_r2(true_b, pca_b),
        ),
        (
            "salient affine R² (perturbed cells)",
            metrics.affine_r2(true_s[perturbed], learned_s[perturbed]),
            metrics.affine_r2(true_s[perturbed], pca_s[perturbed]),
        ),
        ("leakage R²: true salient from background", leak["salient_from_background"], np.nan),
        ("leakage R²: true background from salient", leak["background_from_salient"], np.nan),
        (
            "salient MCC (perturbed cells)",
            metrics.mcc(true_s[perturbed], learned_s[perturbed]),
            metrics.random_rotation_floor(true_s[perturbed], n_repeats=50),
        ),
    ]
    return pd.DataFrame(rows, columns=["measure", "ComparativeVI", "floor"]).set_index("measure")


def run_demo(
    out_dir: str | Path = "compvi_demo",
    *,
    n_cells: int = 4000,
    n_genes: int = 300,
    max_epochs: int = 100,
    seed: int = 0,
    force: bool = False,
    quiet: bool = False,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    say: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Simulate a screen, fit ComparativeVI, and write the results to ``out_dir``.

    Writes ``screen.h5ad`` (everything :meth:`~compvi.ComparativeVI.add_results` writes,
    and the UMAPs of both spaces), ``embeddings.png`` (background and salient UMAPs coloured
    by perturbation), ``recovery.csv`` and the trained model under ``model/``, all or
    nothing: into a hidden folder beside ``out_dir``, renamed to ``out_dir`` at the end.
    The KL weight rises to 1 over the first half of the epochs.

    Raises
    ------
    ValueError
        ``out_dir``'s parent folder does not exist, ``out_dir`` is a file, or it exists
        without ``force`` (with ``force``: it holds files but no earlier demo's
        ``screen.h5ad``).

    Returns
    -------
    The recovery table of :func:`recovery_table`.

    """
    from ._fit import set_seed
    from ._options import kl_warmup_epochs

    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force=force)
    set_seed(seed)
    adata = simulate_screen(
        n_cells=n_cells,
        n_genes=n_genes,
        n_perturbations=4,
        perturbation_strength=[1.0, 1.0, 0.5, 0.0],
        seed=seed,
    )
    ComparativeVI.setup_anndata(adata, condition_key="condition", control_category="control")
    model = ComparativeVI(adata, n_background_latent=4, n_salient_latent=4)
    warmup = kl_warmup_epochs(max_epochs, None)
    say(f"Training {max_epochs} epochs; the KL weight rises to 1 over the first {warmup}.")
    with StagedOutputs({"out": out_dir}) as staged:
        folder = staged.path("out")
        folder.mkdir()
        model.train(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            plan_kwargs={"n_epochs_kl_warmup": warmup},
            enable_progress_bar=not quiet,
        )
        model.add_results(adata)
        model.save(folder / "model", overwrite=True)
        umap(adata, random_state=seed)
        figure = embeddings(adata, color="condition", show=False)
        figure.suptitle("ComparativeVI on a simulated screen (P4 is a null perturbation)")
        figure.savefig(folder / "embeddings.png", dpi=120, bbox_inches="tight")
        plt.close(figure)
        table = recovery_table(
            adata, salient_key="X_compvi_salient", background_key="X_compvi_background"
        )
        table.to_csv(folder / "recovery.csv")
        adata.write_h5ad(folder / "screen.h5ad")
        staged.commit()
    return table


def _check_out_dir(out_dir: Path, *, force: bool) -> None:
    if not out_dir.parent.is_dir():
        raise ValueError(
            f"--out {str(out_dir)!r}: the folder {str(out_dir.parent)!r} does not exist; "
            "create it first."
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file; name a folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise ValueError(
                f"--out {str(out_dir)!r} exists; pass --force to replace it, or choose "
                "another folder."
            )
        if not (out_dir / "screen.h5ad").is_file():
            raise ValueError(
                f"--out {str(out_dir)!r} holds files but no earlier demo (screen.h5ad); "
                "--force replaces only a demo folder. Choose another folder."
            )
