"""Training :class:`~compvi.ComparativeVI`: data split, plan, KL warm-up and constraints."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from scvi.model._utils import get_max_epochs_heuristic

from .._constants import (
    CONSTRAINT_MEANINGS,
    CONSTRAINTS,
    DEFAULT_BOUNDS,
    PER_CONDITION_CONSTRAINTS,
)
from ..train._constraints import DEFAULT_MULTIPLIER_LR, MAX_MULTIPLIER
from ..train._training_plan import ComparativeTrainingPlan
from . import _validation
from ._base import ComparativeModelBase

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


class TrainingMixin(ComparativeModelBase):
    """Fit the model; carry the constraints' multipliers across calls."""

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
        - **background shift**: the normalized kernel distance (MMD) between each
          perturbation's background distribution and the controls', bounded for every
          perturbation on its own (one multiplier each), so a small knock-out cannot keep
          its programme in the background while the large ones hold the bound.

        A model trained again goes on from where its multipliers (and the sparse prior's
        edge bound) stood, also after :meth:`save` and :meth:`load` (they are kept in
        ``model.constraint_state_``). When training ends with a constraint above its bound,
        a warning names it and what to do. Per-epoch curves land in ``model.history``:
        ``loss_control_train`` and ``loss_perturbed_train`` (mean negative ELBO of each
        group), ``mgda_weight`` (the control objective's weight), ``kl_weight``, and for
        each constraint ``{name}_train`` (always), ``{name}_bound`` and
        ``{name}_multiplier`` (when bounded), with ``name`` one of ``leakage``,
        ``dependence``, ``background_shift`` and, with the sparse prior, ``edges``
        (expected edges per perturbation). For the background shift, ``{name}_train`` is
        the mean over the perturbations measured and ``{name}_multiplier`` the largest
        multiplier; ``model.constraint_state_["multipliers"]["background_shift"]`` holds
        one per condition (in the order of the registered categories).
        :func:`compvi.pl.training_diagnostics` draws them.

        Parameters
        ----------
        max_epochs
            Passes over the larger group. ``None``: ``min(400, round(20000 / n_cells * 400))``.
        batch_size
            Cells of each group per minibatch.
        balancing
            ``"sum"`` (the default) adds the control and perturbed objectives. ``"mgda"``
            weighs them by the min-norm combination of their gradients on every parameter
            both reach, the encoder's trunk and background head and the decoder (Sener &
            Koltun, 2018), from running means of the gradients' inner products; it costs
            two extra backward passes a step. ``docs/choosing_settings.md`` compares the
            two on the benchmarks.
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
            The largest normalized kernel distance (squared MMD, in the units of a
            normalized HSIC with the label) between the background posterior means of a
            perturbation's cells and the controls', for each perturbation. A randomized
            screen gives every perturbation the background distribution of the controls,
            which is what the prior assumes; the bound keeps a strong perturbation from
            moving its cells in the background space too (where cell type should be all
            that is left). A perturbation that moves cells towards a state the controls
            also visit (differentiation, a shifted cell-type mix) can then be held by
            neither space, since the leakage bound keeps such controls at the salient
            origin: ``docs/choosing_settings.md`` says which bound to loosen. ``None``
            turns the constraint off.
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
            Dual step size: each epoch multiplies a multiplier by at most
            :math:`e^{\pm\text{multiplier\_lr}}` (in equal parts over the epoch's steps, so
            the pace does not depend on the batch size), following the running mean of its
            measure relative to the bound. A perturbation's background-shift multiplier
            steps only in the minibatches that hold two or more of its cells, by a step
            scaled so that a rare perturbation's moves at the same pace per epoch.
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
            More arguments of the data splitter (:class:`~compvi.ComparativeDataSplitter`),
            e.g. ``data_path`` (where minibatches are gathered: on the training device or
            by the host loader).
        plan_kwargs
            More arguments of the training plan (:class:`~compvi.ComparativeTrainingPlan`)
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
        sparse = CONSTRAINTS.EDGES in self.module.salient_prior.constraint_names
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
        plan_kwargs.setdefault("multipliers", self.constraint_state_.get("multipliers"))
        if sparse:
            plan_kwargs.setdefault("edge_anneal_start", self.constraint_state_.get("edge_bound"))
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
        # A constraint this fit left off keeps where an earlier fit left it, for the next.
        previous = self.constraint_state_
        self.constraint_state_ = {
            "multipliers": (previous.get("multipliers") or {}) | training_plan.multipliers(),
            "edge_bound": (
                training_plan.constraints[CONSTRAINTS.EDGES].bound
                if CONSTRAINTS.EDGES in training_plan.constraints
                else previous.get("edge_bound")
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
        for name in PER_CONDITION_CONSTRAINTS:
            if name not in training_plan.constraints:
                continue
            # One perturbation's minibatch measure is too noisy to judge its bound by; a
            # multiplier that climbed to its ceiling is a violation that lasted.
            constraint = training_plan.constraints[name]
            stuck = constraint.at_ceiling().cpu().numpy()
            if stuck.any():
                names = ", ".join(np.asarray(self.conditions, dtype=object)[stuck])
                violated.append(
                    f"{name} of {names} (their multipliers reached the ceiling "
                    f"{MAX_MULTIPLIER:g}: {name}_bound = {constraint.bound:.3g} could not be met)"
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
