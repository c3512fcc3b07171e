"""Networks of the comparative VAE: a shared-trunk encoder and a piece-wise affine decoder."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal

from ._distributed import GlobalBatchNorm1d

# Keeps posterior variances away from zero, as scvi-tools' encoders do.
_VARIANCE_EPS = 1e-4
# Negative slope of the decoder's activations: leaky-ReLU keeps the decoder piece-wise affine
# and injective-friendly (Kivva et al., 2022) while letting gradients through inactive units.
DECODER_NEGATIVE_SLOPE = 0.2


def _hidden_stack(
    n_in: int, n_hidden: int, n_layers: int, *, batch_norm: bool, dropout_rate: float
) -> nn.ModuleList:
    layers = nn.ModuleList()
    for i in range(n_layers):
        block = [nn.Linear(n_in if i == 0 else n_hidden, n_hidden)]
        if batch_norm:
            block.append(GlobalBatchNorm1d(n_hidden, momentum=0.01, eps=1e-3))
        # Always last, even at rate 0, so the encoder can evaluate a layer without it.
        block += [nn.ReLU(), nn.Dropout(dropout_rate)]
        layers.append(nn.Sequential(*block))
    return layers


class GaussianHead(nn.Module):
    """Mean and variance of a diagonal Gaussian posterior from a hidden representation."""

    def __init__(self, n_hidden: int, n_latent: int) -> None:
        super().__init__()
        self.mean = nn.Linear(n_hidden, n_latent)
        self.log_var = nn.Linear(n_hidden, n_latent)

    def forward(self, hidden: torch.Tensor) -> Normal:
        """Return the posterior distribution for each row of ``hidden``."""
        var = torch.exp(self.log_var(hidden)) + _VARIANCE_EPS
        # Unvalidated: non-finite parameters (diverged weights) then reach the loss, where
        # the training plan stops with a message that names the term and the remedy,
        # instead of torch's report of an invalid argument.
        return Normal(self.mean(hidden), var.sqrt(), validate_args=False)


class SharedTrunkEncoder(nn.Module):
    """Amortized encoder: one trunk on ``log1p`` counts and covariates, one head per latent.

    The background, salient and (optionally) library posteriors read the same hidden
    representation, so the gene-sized input layer is evaluated once per cell instead of once
    per latent space.
    """

    def __init__(
        self,
        n_input: int,
        n_covariates: int,
        n_hidden: int,
        n_layers: int,
        dropout_rate: float,
        n_background_latent: int,
        n_salient_latent: int,
        latent_library: bool,
    ) -> None:
        super().__init__()
        self.trunk = _hidden_stack(
            n_input + n_covariates, n_hidden, n_layers, batch_norm=True, dropout_rate=dropout_rate
        )
        self.background = GaussianHead(n_hidden, n_background_latent)
        self.salient = GaussianHead(n_hidden, n_salient_latent)
        self.library = GaussianHead(n_hidden, 1) if latent_library else None

    def forward(
        self, x_log: torch.Tensor, covariates: torch.Tensor
    ) -> tuple[Normal, Normal, Normal | None, tuple[torch.Tensor, torch.Tensor]]:
        """Posteriors of background, salient and library latents (``None`` if observed).

        The fourth output holds the background and salient posterior means without dropout
        noise, the embedding a trained model returns, on which the training constraints are
        measured: dropout would lower the measured dependences below what the embedding has.
        Out of training, or without dropout, they are the posteriors' means.
        """
        noisy = clean = torch.cat([x_log, covariates], dim=-1)
        for layer in self.trunk:
            body, dropout = layer[:-1], layer[-1]
            hidden = body(noisy)
            # The first layer sees the same input on both paths: compute it once.
            clean = hidden if clean is noisy else body(clean)
            noisy = dropout(hidden)
        library = self.library(noisy) if self.library is not None else None
        qz, qs = self.background(noisy), self.salient(noisy)
        if clean is noisy or not self.training:
            return qz, qs, library, (qz.loc, qs.loc)
        return qz, qs, library, (self.background.mean(clean), self.salient.mean(clean))


class PiecewiseAffineDecoder(nn.Module):
    """Decoder that is piece-wise affine in the latents: linear layers and leaky-ReLUs only.

    No normalization, dropout or smooth activation sits between the latents and the gene
    logits, which is the condition of the block-identifiability result (Lopez et al., 2024).
    Covariates are concatenated to the input of every layer, so they shift each affine piece
    without changing the function class in the latents.
    """

    def __init__(
        self,
        n_latent: int,
        n_covariates: int,
        n_hidden: int,
        n_layers: int,
        n_output: int,
        zero_inflation: bool,
    ) -> None:
        super().__init__()
        self.hidden = nn.ModuleList(
            nn.Linear((n_latent if i == 0 else n_hidden) + n_covariates, n_hidden)
            for i in range(n_layers)
        )
        self.activation = nn.LeakyReLU(DECODER_NEGATIVE_SLOPE)
        self.logits = nn.Linear(n_hidden + n_covariates, n_output)
        self.dropout_logits = (
            nn.Linear(n_hidden + n_covariates, n_output) if zero_inflation else None
        )

    def forward(
        self, latent: torch.Tensor, covariates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return gene logits and zero-inflation logits (``None`` without zero inflation)."""
        if latent.dim() == 3:
            covariates = covariates.expand(latent.shape[0], -1, -1)
        hidden = latent
        for layer in self.hidden:
            hidden = self.activation(layer(torch.cat([hidden, covariates], dim=-1)))
        head_input = torch.cat([hidden, covariates], dim=-1)
        dropout = self.dropout_logits(head_input) if self.dropout_logits is not None else None
        return self.logits(head_input), dropout
