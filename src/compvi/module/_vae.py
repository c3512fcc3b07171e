"""Pure-torch comparative VAE: background and salient latents, piece-wise affine decoder."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch.distributions import Distribution, Normal, Poisson
from torch.distributions import kl_divergence as kl

from .._constants import CONSTRAINTS, GENE_LIKELIHOODS, REGISTRY_KEYS
from ._measures import label_dependence, masked_mean, relative_leakage, space_dependence
from ._networks import PiecewiseAffineDecoder, SharedTrunkEncoder
from ._priors import make_salient_prior


class ComparativeVAE(BaseModuleClass):
    r"""Comparative variational autoencoder for control and perturbed cells.

    Every cell has a background latent :math:`z_b \sim N(0, I)`; perturbed cells also carry a
    salient latent :math:`z_s` with prior :math:`p(z_s \mid c)` (see ``prior``) while control
    cells decode with :math:`z_s = 0`.
    Counts follow :math:`x_g \sim \mathrm{NB}(\ell \rho_g, \theta_g)` (or ZINB, Poisson) with
    :math:`\rho = \mathrm{softmax}(f([z_b, t z_s], s))` and :math:`f` piece-wise affine.

    Parameters
    ----------
    n_input
        Number of genes.
    control_codes
        Integer codes of the registered condition that denote control cells.
    n_conditions
        Number of registered conditions (controls included): the background shift is
        measured for each perturbation's code, and the conditional and sparse priors have
        one row of parameters per condition.
    n_batch
        Number of batches; one-hot encoded into every network when above one.
    n_cats_per_cov
        Number of categories of each registered categorical covariate.
    n_continuous_cov
        Number of registered continuous covariates.
    n_hidden
        Width of the hidden layers.
    n_background_latent
        Dimension of the background latent space.
    n_salient_latent
        Dimension of the salient latent space.
    n_layers
        Number of hidden layers of the encoder trunk and of the decoder.
    dropout_rate
        Dropout in the encoder trunk (the decoder has none: it must stay piece-wise affine).
    gene_likelihood
        ``"nb"``, ``"zinb"`` or ``"poisson"``.
    use_observed_lib_size
        Use the observed total counts (or registered size factors) as library size instead of
        a latent log-normal library.
    use_size_factor_key
        Whether registered size factors replace the observed total counts.
    library_log_means, library_log_vars
        Per-batch mean and variance of log library sizes, the prior of a latent library.
    prior
        Prior of the salient latent of perturbed cells, one of
        :data:`~compvi._constants.PRIORS`: ``"normal"`` (standard normal), ``"mixture"``
        (:class:`~compvi.module._priors.MixturePrior`), ``"conditional"``
        (:class:`~compvi.module._priors.ConditionalPrior`) or ``"sparse"``
        (:class:`~compvi.module._priors.SparsePrior`).
    n_prior_components
        Number of components of the mixture prior.
    mask_temperature
        Gumbel-sigmoid temperature of the sparse prior's graph.

    """

    def __init__(
        self,
        n_input: int,
        control_codes: Sequence[int],
        n_conditions: int,
        n_batch: int = 0,
        n_cats_per_cov: Sequence[int] | None = None,
        n_continuous_cov: int = 0,
        n_hidden: int = 128,
        n_background_latent: int = 10,
        n_salient_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        gene_likelihood: str = "nb",
        use_observed_lib_size: bool = True,
        use_size_factor_key: bool = False,
        library_log_means: np.ndarray | None = None,
        library_log_vars: np.ndarray | None = None,
        prior: str = "normal",
        n_prior_components: int = 10,
        mask_temperature: float = 0.5,
    ) -> None:
        super().__init__()
        if gene_likelihood not in GENE_LIKELIHOODS:
            raise ValueError(
                f"gene_likelihood={gene_likelihood!r} is not one of {GENE_LIKELIHOODS}."
            )
        if len(control_codes) == 0:
            raise ValueError("control_codes must name at least one condition code.")
        if not n_conditions > max(control_codes):
            raise ValueError(
                f"n_conditions={n_conditions} must count every condition code, controls "
                f"included (the largest control code is {max(control_codes)})."
            )
        self.n_input = n_input
        self.n_batch = n_batch
        self.n_cats_per_cov = list(n_cats_per_cov or [])
        self.n_continuous_cov = n_continuous_cov
        self.n_background_latent = n_background_latent
        self.n_salient_latent = n_salient_latent
        self.n_conditions = n_conditions
        self.gene_likelihood = gene_likelihood
        self.use_observed_lib_size = use_observed_lib_size or use_size_factor_key
        self.use_size_factor_key = use_size_factor_key
        self.register_buffer("control_codes", torch.as_tensor(list(control_codes)).long())

        if not self.use_observed_lib_size:
            if library_log_means is None or library_log_vars is None:
                raise ValueError(
                    "A latent library size needs library_log_means and library_log_vars."
                )
            self.register_buffer(
                "library_log_means", torch.as_tensor(library_log_means).float().reshape(1, -1)
            )
            self.register_buffer(
                "library_log_vars", torch.as_tensor(library_log_vars).float().reshape(1, -1)
            )

        n_covariates = (
            (n_batch if n_batch > 1 else 0) + sum(self.n_cats_per_cov) + n_continuous_cov
        )
        self.encoder = SharedTrunkEncoder(
            n_input=n_input,
            n_covariates=n_covariates,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            n_background_latent=n_background_latent,
            n_salient_latent=n_salient_latent,
            latent_library=not self.use_observed_lib_size,
        )
        self.decoder = PiecewiseAffineDecoder(
            n_latent=n_background_latent + n_salient_latent,
            n_covariates=n_covariates,
            n_hidden=n_hidden,
            n_layers=n_layers,
            n_output=n_input,
            zero_inflation=gene_likelihood == "zinb",
        )
        # Gene-wise inverse dispersion, on the log scale.
        self.px_r = torch.nn.Parameter(torch.randn(n_input))
        self.prior = prior
        self.salient_prior = make_salient_prior(
            prior,
            n_latent=n_salient_latent,
            n_conditions=n_conditions,
            control_codes=list(control_codes),
            n_components=n_prior_components,
            mask_temperature=mask_temperature,
        )

    # ------------------------------------------------------------------ helpers
    def shared_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters that both the control and the perturbed cells' objectives reach.

        The encoder's trunk and background (and library) heads, the decoder and the gene
        dispersions; not the salient head or prior, which only perturbed cells' objective
        reaches (controls decode with ``z_s = 0``).
        """
        salient_only = [*self.encoder.salient.parameters(), *self.salient_prior.parameters()]
        own = {id(p) for p in salient_only}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in own]

    def is_perturbed(self, condition: torch.Tensor) -> torch.Tensor:
        """Boolean mask of cells whose condition code is not a control code."""
        return ~torch.isin(condition.reshape(-1).long(), self.control_codes)

    def covariates(
        self,
        batch_index: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One-hot batch and categorical covariates, and continuous covariates, side by side."""
        parts = []
        if self.n_batch > 1:
            parts.append(F.one_hot(batch_index.reshape(-1).long(), self.n_batch))
        if self.n_cats_per_cov:
            for column, n_cats in zip(
                cat_covs.long().unbind(-1), self.n_cats_per_cov, strict=True
            ):
                parts.append(F.one_hot(column, n_cats))
        if self.n_continuous_cov:
            parts.append(cont_covs)
        if not parts:
            return batch_index.new_zeros((batch_index.shape[0], 0), dtype=torch.float32)
        return torch.cat([p.float() for p in parts], dim=-1)

    def _library_prior(self, batch_index: torch.Tensor) -> Normal:
        one_hot = F.one_hot(batch_index.reshape(-1).long(), self.library_log_means.shape[1])
        means = one_hot.float() @ self.library_log_means.T
        variances = one_hot.float() @ self.library_log_vars.T
        return Normal(means, variances.sqrt())

    # ---------------------------------------------------------------- inference
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict:
        return {
            "x": tensors[REGISTRY_KEYS.X_KEY],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
            "condition": tensors[REGISTRY_KEYS.CONDITION_KEY],
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
            "cont_covs": tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
            "size_factor": tensors.get(REGISTRY_KEYS.SIZE_FACTOR_KEY),
        }

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor,
        condition: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        size_factor: torch.Tensor | None = None,
        n_samples: int = 1,
    ) -> dict[str, torch.Tensor | Distribution | None]:
        """Posteriors of the background, salient and library latents, and one sample of each."""
        if x.layout != torch.strided:
            x = x.to_dense()
        covariates = self.covariates(batch_index, cat_covs, cont_covs)
        qz, qs, ql, (background_mean, salient_mean) = self.encoder(torch.log1p(x), covariates)
        sample_shape = torch.Size() if n_samples == 1 else torch.Size([n_samples])
        if self.use_size_factor_key:
            library = torch.log(size_factor)
        elif self.use_observed_lib_size:
            library = torch.log(x.sum(dim=-1, keepdim=True))
        else:
            library = ql.rsample(sample_shape)
        if library.dim() < 3 and n_samples > 1:
            library = library.expand(n_samples, -1, -1)
        return {
            "qz": qz,
            "z": qz.rsample(sample_shape),
            "qs": qs,
            "s": qs.rsample(sample_shape),
            "ql": ql,
            "library": library,
            "perturbed": self.is_perturbed(condition),
            "covariates": covariates,
            "background_mean": background_mean,
            "salient_mean": salient_mean,
        }

    # --------------------------------------------------------------- generative
    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict, **kwargs
    ) -> dict:
        return {
            key: inference_outputs[key] for key in ("z", "s", "library", "perturbed", "covariates")
        }

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        s: torch.Tensor,
        library: torch.Tensor,
        perturbed: torch.Tensor,
        covariates: torch.Tensor,
    ) -> dict[str, torch.Tensor | Distribution]:
        """Expression distribution given both latents; control cells decode with ``z_s = 0``."""
        salient = s * perturbed.unsqueeze(-1).to(s.dtype)
        logits, dropout_logits = self.decoder(torch.cat([z, salient], dim=-1), covariates)
        px_scale = torch.softmax(logits, dim=-1)
        px_rate = torch.exp(library) * px_scale
        theta = torch.exp(self.px_r)
        if self.gene_likelihood == "nb":
            px = NegativeBinomial(mu=px_rate, theta=theta, scale=px_scale)
        elif self.gene_likelihood == "zinb":
            px = ZeroInflatedNegativeBinomial(
                mu=px_rate, theta=theta, zi_logits=dropout_logits, scale=px_scale
            )
        else:
            px = Poisson(px_rate, validate_args=False)
        return {"px": px, "px_logits": logits, "px_scale": px_scale}

    # --------------------------------------------------------------------- loss
    def _minibatch_measures(
        self,
        inference_outputs: dict,
        condition: torch.Tensor,
        gather: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> dict[str, torch.Tensor]:
        """Compute the constrained measures, over the global minibatch when ``gather`` is set.

        The background shift is a vector, one value per condition code (NaN where the
        minibatch does not measure it). All three read the posterior means without dropout
        noise (the embedding the model returns), so a bound holds for what a user scores,
        not for a noisier copy of it.
        """
        background = inference_outputs["background_mean"]
        salient = inference_outputs["salient_mean"]
        condition = condition.reshape(-1, 1).to(background.dtype)
        if gather is not None:
            # One collective for all three: the processes' rows, stacked.
            stacked = gather(torch.cat([background, salient, condition], 1))
            background, salient, condition = stacked.split(
                [background.shape[1], salient.shape[1], 1], dim=1
            )
        labels = condition.round()
        perturbed = self.is_perturbed(labels)
        return {
            CONSTRAINTS.LEAKAGE: relative_leakage(salient, perturbed),
            CONSTRAINTS.DEPENDENCE: space_dependence(background, salient, perturbed, labels),
            CONSTRAINTS.BACKGROUND_SHIFT: label_dependence(
                background, perturbed, labels, self.n_conditions
            ),
        }

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float | torch.Tensor = 1.0,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> LossOutput:
        """Return the two groups' objectives and the measures the constraints bound.

        ``loss`` is ``L_control + L_perturbed``, the mean negative ELBO of each group in the
        minibatch, added (what validation reports). ``extra_metrics`` holds each group's
        objective (``loss_control``, ``loss_perturbed``) and every measure named in
        :data:`~compvi._constants.CONSTRAINTS` (those of the salient prior included): the
        training plan alone weighs the objectives and adds the constraints' penalties.

        ``gather``, under distributed training, stacks a tensor's rows from every process
        (differentiably), so that the measures that are statistics of the whole minibatch
        (dependence, background shift) are those of the global minibatch; the means over
        cells need no gathering, since averaging the processes' gradients averages them.
        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        if x.layout != torch.strided:
            x = x.to_dense()
        perturbed = inference_outputs["perturbed"]
        qz, qs = inference_outputs["qz"], inference_outputs["qs"]

        reconstruction = -generative_outputs["px"].log_prob(x).sum(-1)
        kl_background = kl(qz, Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))).sum(-1)
        kl_salient = self.salient_prior.kl(
            qs, inference_outputs["s"], tensors[REGISTRY_KEYS.CONDITION_KEY]
        )
        kl_salient = kl_salient * perturbed.to(kl_salient.dtype)
        if self.use_observed_lib_size:
            kl_library = torch.zeros_like(reconstruction)
        else:
            prior = self._library_prior(tensors[REGISTRY_KEYS.BATCH_KEY])
            kl_library = kl(inference_outputs["ql"], prior).sum(-1)

        per_cell = reconstruction + kl_weight * (kl_background + kl_salient) + kl_library
        loss_control = masked_mean(per_cell, ~perturbed)
        loss_perturbed = masked_mean(per_cell, perturbed)
        measures = self._minibatch_measures(
            inference_outputs, tensors[REGISTRY_KEYS.CONDITION_KEY], gather
        )
        return LossOutput(
            loss=loss_control + loss_perturbed,
            reconstruction_loss=reconstruction,
            kl_local={
                "kl_background": kl_background,
                "kl_salient": kl_salient,
                "kl_library": kl_library,
            },
            extra_metrics={
                "loss_control": loss_control,
                "loss_perturbed": loss_perturbed,
                **measures,
                **self.salient_prior.measures(),
            },
        )
