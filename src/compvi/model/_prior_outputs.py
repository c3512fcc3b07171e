"""What the fitted salient priors tell the user: components, per-perturbation laws, the graph."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from ..module._priors import MixturePrior, SparsePrior
from . import _validation
from ._base import ComparativeModelBase


def _factor_names(n: int) -> list[str]:
    return [f"s{j + 1}" for j in range(n)]


def _parameter_table(index: list[str], means: torch.Tensor, scales: torch.Tensor) -> pd.DataFrame:
    names = _factor_names(means.shape[1])
    return pd.concat(
        [
            pd.DataFrame(means.cpu().numpy(), index=index, columns=[f"mean_{n}" for n in names]),
            pd.DataFrame(scales.cpu().numpy(), index=index, columns=[f"scale_{n}" for n in names]),
        ],
        axis=1,
    )


class PriorOutputsMixin(ComparativeModelBase):
    """Read the fitted salient prior of a :class:`~compvi.ComparativeVI`."""

    def _prior_of(self, kind: type, prior: str, method: str):
        salient_prior = self.module.salient_prior
        if not isinstance(salient_prior, kind):
            raise ValueError(
                f"{method} needs a model created with prior={prior!r}; this model has "
                f"prior={self.module.prior!r}."
            )
        self._check_if_trained(warn=True)
        return salient_prior

    @property
    def _perturbations(self) -> list[str]:
        controls = set(self._control_codes())
        return [c for code, c in enumerate(self.conditions) if code not in controls]

    @torch.inference_mode()
    def get_prior_parameters(self) -> pd.DataFrame:
        """Parameters of the fitted salient prior.

        Returns
        -------
        One row per mixture component (``prior="mixture"``) or per perturbation
        (``"conditional"`` and ``"sparse"``), with columns ``mean_s1`` … and ``scale_s1`` …
        (the prior's mean and standard deviation of each salient factor); the mixture adds
        ``weight`` (the component's share). For the sparse prior these are the laws under
        the hard graph of :meth:`get_perturbation_graph`: factors without an edge keep the
        perturbation-independent base law, mean 0.

        Raises
        ------
        ValueError
            The model has ``prior="normal"``, whose parameters are fixed at 0 and 1.

        """
        salient_prior = self.module.salient_prior
        self._check_if_trained(warn=True)
        codes = torch.as_tensor(
            [self.conditions.index(p) for p in self._perturbations], device=self.device
        )
        laws = salient_prior.fitted_laws(codes)
        if laws is None:
            raise ValueError(
                "get_prior_parameters needs a learned prior (prior='mixture', 'conditional' "
                f"or 'sparse'); this model has prior={self.module.prior!r}, fixed at N(0, I)."
            )
        if laws.weights is None:
            return _parameter_table(self._perturbations, laws.means, laws.scales)
        index = [f"component_{k}" for k in range(len(laws.weights))]
        table = _parameter_table(index, laws.means, laws.scales)
        table.insert(0, "weight", laws.weights.cpu().numpy())
        return table

    @_validation.leaves_adata_untouched_on_error
    @torch.inference_mode()
    def get_component_responsibilities(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Posterior probability of each mixture component given each cell's salient mean.

        Only meaningful for perturbed cells: controls decode with :math:`z_s = 0` and are
        not modelled by the prior.

        Parameters
        ----------
        adata
            AnnData with the genes the model was trained on; ``None`` uses the training data.
        indices
            Cells to use; ``None`` uses all.
        batch_size
            Cells per minibatch; ``None`` uses ``scvi.settings.batch_size``.

        Returns
        -------
        Cells x components table whose rows sum to 1, indexed by ``obs_names``.

        Raises
        ------
        ValueError
            The model was not created with ``prior="mixture"``.

        """
        mixture = self._prior_of(MixturePrior, "mixture", "get_component_responsibilities")
        # get_latent_representation validates (and transfers) a new AnnData once, and checks
        # the indices.
        salient = self.get_latent_representation(adata, indices=indices, batch_size=batch_size)
        adata = self.adata if adata is None else adata
        indices = _validation.check_indices(indices, adata.n_obs)
        parameter = mixture.means
        probabilities = mixture.responsibilities(
            torch.as_tensor(salient, dtype=parameter.dtype, device=parameter.device)
        )
        obs_names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        return pd.DataFrame(
            probabilities.cpu().numpy(),
            index=obs_names,
            columns=[f"component_{k}" for k in range(parameter.shape[0])],
        )

    @torch.inference_mode()
    def get_perturbation_graph(self) -> pd.DataFrame:
        """Edge probabilities of the learned perturbation → salient factor graph.

        Entry ``(c, j)`` is the probability that perturbation ``c`` shifts salient factor
        ``j`` (column ``s{j+1}`` of :meth:`get_latent_representation`); the model uses the
        edges above 0.5. Draw it with :func:`compvi.pl.perturbation_graph`.

        Returns
        -------
        Perturbations x factors table of probabilities in [0, 1].

        Raises
        ------
        ValueError
            The model was not created with ``prior="sparse"``.

        """
        sparse = self._prior_of(SparsePrior, "sparse", "get_perturbation_graph")
        probabilities = sparse.edge_probabilities().cpu().numpy()
        return pd.DataFrame(
            probabilities,
            index=pd.Index(self._perturbations, name="perturbation"),
            columns=_factor_names(probabilities.shape[1]),
        )
