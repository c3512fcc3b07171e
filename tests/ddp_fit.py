"""Train ComparativeVI on a small simulated screen on one CPU process or with CPU DDP (gloo).

``tests/test_distributed.py`` runs this script, since Lightning's ``"ddp"`` strategy
relaunches the running script once per device. Each process writes ``rank<r>.pt`` to the
output folder: what it saw and did at every training step, and its final weights.

Usage: ``python tests/ddp_fit.py OUT --devices 2 --batch-size 16``.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import scvi
import torch
from torch.distributions import Normal

import compvi
from compvi._constants import DATA_SOURCES, REGISTRY_KEYS
from compvi.data import simulate_screen
from compvi.train._training_plan import ComparativeTrainingPlan


def _row_ids(counts: np.ndarray) -> list[str]:
    """Identify cells by their count vectors, which the loader hands over without indices."""
    return [hashlib.sha1(row.tobytes()).hexdigest() for row in counts.astype(np.float32)]


class StepRecorder(pl.Callback):
    """Record, at every training step, the cells each group loaded and the plan's state."""

    def __init__(self) -> None:
        self.steps = []
        self.mgda_weights = []
        mgda_weight = ComparativeTrainingPlan._mgda_weight

        def recording_mgda_weight(plan, *args):
            weight = mgda_weight(plan, *args)
            self.mgda_weights.append(weight.item())
            return weight

        ComparativeTrainingPlan._mgda_weight = recording_mgda_weight

    def on_train_batch_end(self, trainer, plan, outputs, batch, batch_idx) -> None:
        self.steps.append(
            {
                "epoch": trainer.current_epoch,
                "cells": {
                    name: _row_ids(batch[name][REGISTRY_KEYS.X_KEY].numpy())
                    for name in (DATA_SOURCES.CONTROL, DATA_SOURCES.PERTURBED)
                },
                "mgda_weight": self.mgda_weights[-1],
                "multipliers": {
                    name: constraint.multipliers() for name, constraint in plan.constraints.items()
                },
                "loss": outputs["loss"].item(),
            }
        )


def main() -> None:
    """Parse the arguments, train, and write this process's record."""
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    scvi.settings.seed = 0
    adata = simulate_screen(n_cells=200, n_genes=30, n_perturbations=3, seed=3)
    control = (adata.obs["condition"] == "control").to_numpy()
    # An even number of cells in each group: every global minibatch then splits evenly over
    # two processes, and the mean of their means is the global minibatch's mean.
    keep = np.ones(adata.n_obs, dtype=bool)
    for group in (control, ~control):
        if group.sum() % 2:
            keep[np.flatnonzero(group)[0]] = False
    adata = adata[keep].copy()
    compvi.ComparativeVI.setup_anndata(
        adata, condition_key="condition", control_category="control"
    )
    model = compvi.ComparativeVI(
        adata, n_background_latent=3, n_salient_latent=3, n_hidden=16, dropout_rate=0.0
    )

    # Posterior means instead of draws: the one randomness left is the data order, which
    # the sampler makes the same for any number of processes, so runs can be compared.
    def posterior_mean(self, sample_shape=()):
        return self.loc.expand(torch.Size(sample_shape) + self.loc.shape)

    Normal.rsample = posterior_mean
    recorder = StepRecorder()
    distributed = args.devices > 1
    model.train(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        train_size=1.0,
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if distributed else "auto",
        background_shift_bound=0.05,
        balancing="mgda",
        enable_progress_bar=False,
        callbacks=[recorder],
        plan_kwargs={"n_epochs_kl_warmup": 2},
    )
    rank = int(torch.distributed.get_rank()) if distributed else 0
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "steps": recorder.steps,
            "state_dict": {k: v.detach().clone() for k, v in model.module.state_dict().items()},
            "cells": {
                name: _row_ids(
                    adata.X[group].toarray() if hasattr(adata.X, "toarray") else adata.X[group]
                )
                for name, group in (
                    (DATA_SOURCES.CONTROL, control[keep]),
                    (DATA_SOURCES.PERTURBED, ~control[keep]),
                )
            },
        },
        args.out / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main()
