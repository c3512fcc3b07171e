"""How much of each true block the simulated counts determine: a supervised reference.

Run: ``python benchmarks/ceiling.py``. An MLP regressor is *trained on the true latents*
(which no unsupervised model sees) to predict them from log counts, and scored by R² on
held-out cells: what supervised regression reaches on the same counts, the context for the
affine-R² targets of ``identifiability.py``. It is an estimate from finite data, not a
strict upper bound.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor

from compvi.data import simulate_setting

SIZES = [(2000, 200), (4000, 300)]


def main() -> None:
    rows = []
    for n_cells, n_genes in SIZES:
        adata = simulate_setting("piecewise_affine", n_cells=n_cells, n_genes=n_genes, seed=0)
        x = np.log1p(adata.X.toarray())
        x -= x.mean(axis=0)
        perturbed = (adata.obsm["true_salient"] != 0).any(axis=1)
        blocks = {
            "background": (adata.obsm["true_background"], np.ones(adata.n_obs, dtype=bool)),
            "salient": (adata.obsm["true_salient"], perturbed),
        }
        for block, (truth, rows_used) in blocks.items():
            x_fit, x_test, y_fit, y_test = train_test_split(
                x[rows_used], truth[rows_used], test_size=0.3, random_state=0
            )
            regressor = MLPRegressor(
                hidden_layer_sizes=(256, 256),
                alpha=1e-3,
                max_iter=500,
                early_stopping=True,
                random_state=0,
            ).fit(x_fit, y_fit)
            score = r2_score(y_test, regressor.predict(x_test))
            rows.append({"cells": n_cells, "genes": n_genes, "block": block, "R²": score})
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
