"""Training plan: MGDA balancing of control and perturbed objectives under constraints."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Literal

import numpy as np
import torch
from scvi.module.base import BaseModuleClass, LossOutput
from scvi.train import TrainingPlan

from .._constants import (
    BALANCING_MODES,
    CONSTRAINTS,
    DEFAULT_BOUNDS,
    PER_CONDITION_CONSTRAINTS,
)
from ..dataloaders._paired import concatenate_sources
from ..module._distributed import GlobalBatchNorm1d, gather_rows, sum_over_processes
from ..module._measures import mean_of_measured
from ._constraints import DEFAULT_MULTIPLIER_LR, Constraint
from ._mgda import gradient_products, min_norm_weight_of_products

#: Weight of the past in the running means of the two objectives' gradient inner products
#: that set MGDA's weight, so that about the last 1 / (1 - 0.9) = 10 steps count: one
#: minibatch's gradients are noisy estimates of the objectives'.
MGDA_SMOOTHING = 0.9


def _flat_gradient(loss: torch.Tensor, parameters: list[torch.nn.Parameter]) -> torch.Tensor:
    """Gradient of ``loss`` with respect to ``parameters``, flattened (zeros where unused)."""
    parts = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for g, p in zip(parts, parameters, strict=True)
        ]
    )


def _scalar_metrics(metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace each per-perturbation vector among ``metrics`` by its mean over those measured.

    A vector that measured nothing is left out, so that the epoch's mean is over the steps
    that measured something rather than pulled towards 0 by those that did not.
    """
    return {
        name: mean_of_measured(v) if v.ndim else v
        for name, v in metrics.items()
        if not v.ndim or not bool(v.isnan().all())
    }


class ComparativeTrainingPlan(TrainingPlan):
    r"""Fit a comparative VAE on paired control/perturbed minibatches.

    Each step evaluates the mean negative ELBO of the control cells, :math:`L_c`, and of the
    perturbed cells, :math:`L_p`, and minimizes the normalized Lagrangian

    .. math::

        L = 2\,(\alpha L_c + (1 - \alpha) L_p), \qquad
        \frac{L + \sum_k \lambda_k (R_k / \varepsilon_k - 1)\,\lvert\bar L\rvert}
        {1 + \sum_k \lambda_k},

    where each :math:`R_k \le \varepsilon_k` is a constraint on the module's measures of
    how the two latent spaces mix (see :class:`~compvi.train._constraints.Constraint`),
    :math:`\bar L` is :math:`L` held constant for the gradient, and each
    :math:`\lambda_k \ge 0` follows dual ascent on the relative violation, by at most a
    factor :math:`e^{\eta}` per epoch. The denominator leaves the direction of the gradient
    as the plain Lagrangian's but keeps its scale from following the multipliers: Adam
    divides by a running mean of squared gradients that forgets over about 1,000 steps, so a
    loss whose scale grows by orders of magnitude within an epoch (a multiplier rising
    while a bound is far off) can take steps many times the learning rate.

    Parameters
    ----------
    module
        A :class:`~compvi.module._vae.ComparativeVAE`.
    balancing
        ``"mgda"``: :math:`\alpha` is the min-norm (MGDA) weight of the two objectives'
        gradients with respect to every parameter both reach (see
        :meth:`~compvi.module._vae.ComparativeVAE.shared_parameters`: the encoder's trunk
        and background head, the decoder), read from running means of their inner
        products (``MGDA_SMOOTHING``); it costs two extra backward passes a step.
        ``"sum"``: :math:`\alpha = 0.5`, the plain sum.
    leakage_bound
        Largest salient energy of control cells relative to perturbed cells (see
        :func:`~compvi.module._measures.relative_leakage`). ``None`` turns the constraint off.
    dependence_bound
        Largest normalized HSIC between the background and salient posterior means of
        perturbed cells (see :func:`~compvi.module._measures.space_dependence`). ``None`` turns
        the constraint off.
    background_shift_bound
        Largest normalized kernel distance (MMD) between the background posterior means of
        a perturbation's cells and the controls' (see
        :func:`~compvi.module._measures.label_dependence`), for each perturbation on its
        own, with a multiplier each. ``None`` turns the constraint off.
    edge_bound
        Largest expected number of edges per perturbation of the sparse prior's
        perturbation → factor graph (see
        :meth:`~compvi.module._priors.SparsePrior.expected_edges`).
        Needs a module with ``prior="sparse"``; ``None`` turns the constraint off.
    edge_anneal_fraction
        The edge bound starts at the number of salient factors (no constraint) and falls
        linearly to ``edge_bound`` over this fraction of ``max_epochs``: the prior first
        learns what each perturbation does, then keeps the edges that explain most of it.
        0 applies ``edge_bound`` from the first step.
    edge_anneal_start
        Where the edge bound's schedule starts; ``None``: the number of salient factors.
        A model trained again passes where its last fit ended, so the graph is not
        re-grown.
    prior_lr
        Learning rate of the salient prior's parameters (mixture components,
        per-perturbation laws, graph logits); ``None`` uses ``lr``. They are few and
        each sees every cell of its perturbation, so a larger step lets them keep pace
        with the encoder.
    leakage_weight
        A fixed penalty weight on the leakage instead of its constraint (for ablations);
        needs ``leakage_bound=None``.
    multiplier_lr
        Dual step size of every multiplier: each epoch multiplies it by at most
        :math:`e^{\pm\eta}`, in equal parts over the epoch's steps that measure it (see
        :class:`~compvi.train._constraints.Constraint`).
    multipliers
        Starting values of the multipliers by constraint name (where an earlier fit left
        them): a number, or for the background shift one number per condition code;
        missing ones start at :data:`~compvi.train._constraints.MIN_MULTIPLIER`.
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``n_epochs_kl_warmup``, ...).

    """

    def __init__(
        self,
        module: BaseModuleClass,
        *,
        balancing: Literal["mgda", "sum"] = "sum",
        leakage_bound: float | None = DEFAULT_BOUNDS[CONSTRAINTS.LEAKAGE],
        dependence_bound: float | None = DEFAULT_BOUNDS[CONSTRAINTS.DEPENDENCE],
        background_shift_bound: float | None = DEFAULT_BOUNDS[CONSTRAINTS.BACKGROUND_SHIFT],
        edge_bound: float | None = None,
        edge_anneal_fraction: float = 0.5,
        edge_anneal_start: float | None = None,
        prior_lr: float | None = 1e-2,
        leakage_weight: float | None = None,
        multiplier_lr: float = DEFAULT_MULTIPLIER_LR,
        multipliers: dict[str, float | list[float]] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(module, **kwargs)
        if balancing not in BALANCING_MODES:
            raise ValueError(f"balancing={balancing!r} is not one of {BALANCING_MODES}.")
        if leakage_bound is not None and leakage_weight is not None:
            raise ValueError(
                "Pass either leakage_bound (a constraint with a learned multiplier) or "
                "leakage_weight (a fixed penalty), not both; set the other to None."
            )
        if leakage_weight is not None and leakage_weight < 0:
            raise ValueError(f"leakage_weight must be >= 0, got {leakage_weight}.")
        if (
            edge_bound is not None
            and CONSTRAINTS.EDGES not in module.salient_prior.constraint_names
        ):
            raise ValueError(
                f"edge_bound bounds the graph of the sparse prior, but the model's prior is "
                f"{module.prior!r}; create the model with prior='sparse' or pass "
                "edge_bound=None."
            )
        if not 0 <= edge_anneal_fraction <= 1:
            raise ValueError(
                f"edge_anneal_fraction must be in [0, 1], got {edge_anneal_fraction}."
            )
        if prior_lr is not None and not prior_lr > 0:
            raise ValueError(f"prior_lr must be > 0, got {prior_lr}; None uses lr.")
        self.edge_bound = edge_bound
        self.edge_anneal_fraction = edge_anneal_fraction
        self.prior_lr = prior_lr
        self.balancing = balancing
        self.leakage_weight = leakage_weight
        multipliers = multipliers or {}
        self.constraints = torch.nn.ModuleDict(
            {
                name: Constraint(
                    name,
                    bound,
                    multiplier_lr,
                    multipliers.get(name),
                    n_groups=module.n_conditions if name in PER_CONDITION_CONSTRAINTS else None,
                )
                for name, bound in (
                    (CONSTRAINTS.LEAKAGE, leakage_bound),
                    (CONSTRAINTS.DEPENDENCE, dependence_bound),
                    (CONSTRAINTS.BACKGROUND_SHIFT, background_shift_bound),
                    (CONSTRAINTS.EDGES, edge_bound),
                )
                if bound is not None
            }
        )
        if balancing == "mgda":
            # Running means of the objectives' gradient inner products (NaN until the
            # first); only MGDA reads them, so a summed fit's checkpoints do not carry them.
            self.register_buffer("mgda_products", torch.full((3,), float("nan")))
        self.edge_anneal_start = max(
            module.n_salient_latent if edge_anneal_start is None else edge_anneal_start,
            edge_bound or 0.0,
        )

    def multipliers(self) -> dict[str, float | list[float]]:
        """Return the current multiplier of each constraint, by name.

        A per-perturbation constraint has a list, one per condition code.
        """
        return {name: c.multipliers() for name, c in self.constraints.items()}

    def configure_optimizers(self):
        """scvi-tools' optimizer, with the salient prior's parameters in their own group."""
        config = super().configure_optimizers()
        prior_parameters = [p for p in self.module.salient_prior.parameters() if p.requires_grad]
        if self.prior_lr is None or not prior_parameters:
            return config
        optimizer = config["optimizer"]
        ids = {id(p) for p in prior_parameters}
        group = optimizer.param_groups[0]
        group["params"] = [p for p in group["params"] if id(p) not in ids]
        optimizer.add_param_group({"params": prior_parameters, "lr": self.prior_lr})
        return config

    # Keys of the generators' states and of the training samplers' pass counters in a
    # Lightning checkpoint.
    _RNG_STATES_KEY = "compvi_rng_states"
    _LOADER_PASSES_KEY = "compvi_loader_passes"

    def _train_samplers(self) -> dict:
        """Return the training loader's batch samplers, by group (none outside of fitting)."""
        loader = self._trainer.train_dataloader if self._trainer is not None else None
        return dict(getattr(loader, "samplers", None) or {})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the random number generators' states and the loader's passes.

        A Lightning checkpoint keeps the weights (with the dual-ascent multipliers, buffers
        of this plan), the optimizer and the loop counters (which drive the KL warm-up and
        the edge-bound schedule), but neither the global generators, from which dropout,
        the posterior samples and the sparse prior's Gumbel noise draw, nor the training
        loader's pass counters, which seed its shuffles. Without them a resumed run would
        go on differently from the uninterrupted one.
        """
        super().on_save_checkpoint(checkpoint)
        checkpoint[self._LOADER_PASSES_KEY] = {
            name: sampler.passes for name, sampler in self._train_samplers().items()
        }
        states = {"torch": torch.get_rng_state(), "python": random.getstate()}
        # numpy's state as tensors and plain numbers, so that checkpoints load with
        # torch.load(weights_only=True). The legacy global generator is the one to save:
        # it is what library code draws from.
        _, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)  # noqa: NPY002
        states["numpy"] = (torch.from_numpy(keys.astype(np.int64)), position, has_gauss)
        states["numpy_cached_gaussian"] = float(cached_gaussian)
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint[self._RNG_STATES_KEY] = states

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore what :meth:`on_save_checkpoint` stored.

        Lightning calls this before the first training batch is drawn, so a run resumed with
        ``model.train(..., ckpt_path=...)`` draws the same minibatches and noise as the
        uninterrupted run. This sets the global torch, numpy and Python generators.
        """
        super().on_load_checkpoint(checkpoint)
        # The training loader does not exist yet: on_train_start hands the passes to it.
        self._loader_passes_to_restore = checkpoint.get(self._LOADER_PASSES_KEY)
        states = checkpoint.get(self._RNG_STATES_KEY)
        if states is None:  # a checkpoint written without them: resume, not reproduce
            return
        torch.set_rng_state(states["torch"])
        random.setstate(states["python"])
        keys, position, has_gauss = states["numpy"]
        np.random.set_state(  # noqa: NPY002 (the legacy global generator, as saved)
            (
                "MT19937",
                keys.numpy().astype(np.uint32),
                position,
                has_gauss,
                states["numpy_cached_gaussian"],
            )
        )
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def on_train_start(self) -> None:
        """Give a resumed run's training loader the pass counters of the checkpoint.

        Lightning builds the loader after restoring the checkpoint and draws the first
        minibatch after this hook, so the resumed run shuffles as the uninterrupted one.
        """
        super().on_train_start()
        # Not a state_dict on the loader: Lightning restores loader states only from
        # checkpoints taken mid-epoch, and epoch-end checkpoints are the common ones.
        passes = getattr(self, "_loader_passes_to_restore", None) or {}
        for name, sampler in self._train_samplers().items():
            if name in passes:
                sampler.passes = passes[name]
        self._loader_passes_to_restore = None

    def on_train_epoch_start(self) -> None:
        """Move the edge bound along its annealing schedule."""
        super().on_train_epoch_start()
        if CONSTRAINTS.EDGES not in self.constraints:
            return
        # max_epochs is None or -1 when training is bounded by steps: no schedule then.
        anneal_epochs = self.edge_anneal_fraction * max(self.trainer.max_epochs or 0, 0)
        progress = min(1.0, self.current_epoch / anneal_epochs) if anneal_epochs else 1.0
        start = self.edge_anneal_start
        self.constraints[CONSTRAINTS.EDGES].bound = start + progress * (self.edge_bound - start)

    def _mgda_weight(self, loss_output: LossOutput) -> torch.Tensor:
        """MGDA's weight of the control objective from smoothed gradient inner products."""
        extra = loss_output.extra_metrics
        parameters = self.module.shared_parameters()
        grads = torch.stack(
            [_flat_gradient(extra[key], parameters) for key in ("loss_control", "loss_perturbed")]
        )
        # Under distributed training the mean over processes is the gradient of the global
        # minibatch's objectives, so every process computes the same weight.
        grad_control, grad_perturbed = self._mean_over_processes(grads)
        products = gradient_products(grad_control, grad_perturbed).detach()
        # The first products start the running means (a select: no wait for the device).
        previous = torch.where(self.mgda_products.isnan(), products, self.mgda_products)
        self.mgda_products.copy_(MGDA_SMOOTHING * previous + (1 - MGDA_SMOOTHING) * products)
        return min_norm_weight_of_products(self.mgda_products)

    def _mean_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        """Average a tensor over the processes of distributed training (itself on one)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return tensor
        return self.trainer.strategy.reduce(tensor, reduce_op="mean")

    def _distribute_minibatch_statistics(self, distributed: bool) -> None:
        self.loss_kwargs.pop("gather", None)
        if distributed:
            self.loss_kwargs["gather"] = gather_rows
        for layer in self.module.modules():
            if isinstance(layer, GlobalBatchNorm1d):
                layer.sum_over_processes = sum_over_processes if distributed else None

    def on_fit_start(self) -> None:
        """Under distributed training, take minibatch statistics over all processes."""
        super().on_fit_start()
        self._distribute_minibatch_statistics(self.trainer.world_size > 1)

    def on_fit_end(self) -> None:
        """Back to one process's statistics, for inference and later fits."""
        super().on_fit_end()
        self._distribute_minibatch_statistics(False)

    def compute_and_log_metrics(self, loss_output: LossOutput, metrics: dict, mode: str) -> None:
        """scvi-tools' metrics, computed without gradients but outside inference mode.

        Tensors created in inference mode cannot be updated in place, and under distributed
        training Lightning averages the logged values across processes in place.
        """
        # A per-perturbation measure is logged as its mean over the perturbations measured.
        loss_output = dataclasses.replace(
            loss_output, extra_metrics=_scalar_metrics(loss_output.extra_metrics)
        )
        with torch.no_grad():
            TrainingPlan.compute_and_log_metrics.__wrapped__(self, loss_output, metrics, mode)

    def _raise_if_not_finite(self, loss: torch.Tensor, loss_output: LossOutput, perturbed):
        if torch.isfinite(loss):
            return
        terms = {
            m: v
            for m, v in _scalar_metrics(loss_output.extra_metrics).items()
            if not m.startswith("loss_")
        }
        per_cell = {**loss_output.reconstruction_loss, **loss_output.kl_local}
        for name, values in per_cell.items():
            terms[f"{name} of control cells"] = values[~perturbed].mean()
            terms[f"{name} of perturbed cells"] = values[perturbed].mean()
        broken = [f"{name} = {v.item():.4g}" for name, v in terms.items() if not torch.isfinite(v)]
        raise FloatingPointError(
            f"ComparativeVI training stopped at epoch {self.current_epoch}, step "
            f"{self.global_step}: the loss is not finite ({'; '.join(broken) or loss.item()}). "
            "The weights of the last finite step are kept. Check the counts for extreme "
            "values, or lower the learning rate with plan_kwargs={'lr': ...}."
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """One step on a paired minibatch: balance, constrain, log, update the multipliers."""
        if "kl_weight" in self.loss_kwargs:
            self.loss_kwargs.update({"kl_weight": self.kl_weight})
        tensors = concatenate_sources(batch)
        inference_outputs, _, loss_output = self.forward(tensors, loss_kwargs=self.loss_kwargs)
        perturbed = inference_outputs["perturbed"]
        extra = loss_output.extra_metrics
        if self.balancing == "mgda":
            alpha = self._mgda_weight(loss_output)
        else:
            alpha = torch.full((), 0.5, device=perturbed.device)
        loss = 2 * (alpha * extra["loss_control"] + (1 - alpha) * extra["loss_perturbed"])
        # Penalties in units of the objective, so the multipliers are free of units.
        scale = loss.detach().abs()
        total = torch.ones((), device=loss.device)
        for measure, constraint in self.constraints.items():
            loss = loss + constraint.penalty(extra[measure], scale)
            total = total + constraint.weight(extra[measure])
        loss = loss / total
        if self.leakage_weight:
            loss = loss + self.leakage_weight * extra[CONSTRAINTS.LEAKAGE]
        self._raise_if_not_finite(loss, loss_output, perturbed)

        log = {"on_step": self.on_step, "on_epoch": self.on_epoch, "batch_size": len(perturbed)}
        self.log("train_loss", loss, prog_bar=True, **log)
        self.log("mgda_weight", alpha, **log)
        self.log("kl_weight", self.kl_weight, **log)
        if self.constraints:
            # The measures come from the minibatch gathered over processes, so they agree
            # but for rounding; their mean makes the multipliers identical across processes.
            flat = [extra[measure].detach().reshape(-1) for measure in self.constraints]
            measures = self._mean_over_processes(torch.cat(flat)).split([len(m) for m in flat])
            share = self._epoch_share()
            for (measure, constraint), value in zip(
                self.constraints.items(), measures, strict=True
            ):
                # The largest multiplier: what the most violated perturbation weighs.
                self.log(f"{measure}_multiplier", constraint.value.max(), **log)
                self.log(f"{measure}_bound", constraint.bound, **log)
                constraint.step(value.reshape(constraint.value.shape), share)
        self.compute_and_log_metrics(loss_output, self.train_metrics, "train")
        return loss

    def _epoch_share(self) -> float:
        """Return the part of a training epoch one step covers (1 without a known length)."""
        # The dual step is per epoch: per step, a screen cut into many minibatches wound its
        # multipliers up before the network could answer them (140 steps an epoch on
        # Papalexi), and one cut into few hardly moved them.
        steps = self.trainer.num_training_batches
        return 1.0 / steps if math.isfinite(steps) and steps >= 1 else 1.0

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Log validation metrics on a paired minibatch."""
        super().validation_step(concatenate_sources(batch), batch_idx)
