"""Minibatch measures of how the latent spaces mix, for the training constraints.

Each measure is scale-free, so that one bound reads the same on any data set: the kernel
measures are normalized dependences in [0, 1] (about 0 for independent variables, 1 for a
deterministic relation), and the leakage is a ratio of salient energies.
"""

from __future__ import annotations

import torch

#: Below this many rows the unbiased HSIC estimator is undefined (it divides by n - 3).
MIN_HSIC_ROWS = 4
#: Neighbour whose distance sets the local length scale of the kernel measures.
LOCAL_NEIGHBOURS = 15
#: Squared salient norm of perturbed cells below which the salient space counts as collapsed
#: (a root mean square of 0.1 in all, against about 1 per dimension under the prior).
MIN_SALIENT_ENERGY = 1e-2


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the rows selected by ``mask``; 0 when no row is selected."""
    weights = mask.to(values.dtype)
    return (values * weights).sum(-1) / weights.sum().clamp(min=1.0)


def rbf_gram(points: torch.Tensor, *, local: bool = False) -> torch.Tensor:
    r"""Gaussian-kernel Gram matrix with the median heuristic bandwidth.

    :math:`K_{ij} = e^{-d_{ij}^2 / m}`, with :math:`m` the median squared distance between
    distinct rows, held constant for the gradient. Coordinates with little spread barely
    move the distances, so collapsed latent dimensions neither count nor dominate the
    gradient, unlike standardized correlations.

    With ``local=True`` the kernel averages in a second, local length scale :math:`\ell`,
    the mean squared distance of a row to its :data:`LOCAL_NEIGHBOURS`-th nearest
    neighbour: :math:`\tfrac12(e^{-d_{ij}^2 / m} + e^{-d_{ij}^2 / \ell})`. On clustered
    data (cell types) the median scale is the distance between clusters, and a shift
    within every cluster, which a nearest-neighbour classifier or a UMAP shows, barely
    moves it; the local scale sees it. A sum of characteristic kernels is characteristic.
    """
    squared = torch.cdist(points, points).pow(2)
    n = points.shape[0]
    detached = squared.detach()
    # The distances are symmetric, so the upper triangle has the median of all off-diagonal
    # entries (each appears twice there) at half the cost.
    rows, columns = torch.triu_indices(n, n, offset=1, device=points.device)
    tiny = torch.finfo(points.dtype).tiny
    gram = torch.exp(-squared / detached[rows, columns].median().clamp(min=tiny))
    if not local:
        return gram
    # The smallest distance of each row is the point's own (0): the k-th neighbour is the
    # (k + 1)-th smallest.
    neighbour = min(LOCAL_NEIGHBOURS, n - 1)
    local_scale = detached.kthvalue(neighbour + 1, dim=1).values.mean().clamp(min=tiny)
    return (gram + torch.exp(-squared / local_scale)) / 2


def unbiased_hsic(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    r"""Unbiased estimator of the Hilbert-Schmidt independence criterion of two Gram matrices.

    The estimator of Song et al. (2012): with :math:`\tilde K, \tilde L` the Gram matrices
    with zeroed diagonals and :math:`n` rows,

    .. math::

        \frac{1}{n(n-3)}\Bigl[\operatorname{tr}(\tilde K \tilde L)
        + \frac{\mathbf 1^\top \tilde K \mathbf 1\, \mathbf 1^\top \tilde L \mathbf 1}
        {(n-1)(n-2)} - \frac{2}{n-2}\mathbf 1^\top \tilde K \tilde L \mathbf 1\Bigr].

    Its expectation is 0 for independent variables whatever :math:`n`, so a bound on it
    does not depend on the minibatch size.
    """
    return _hsic_of_hollow(_hollow(first), _hollow(second))


def _hollow(gram: torch.Tensor) -> torch.Tensor:
    """Return the Gram matrix with its diagonal set to zero."""
    eye = torch.eye(gram.shape[0], dtype=torch.bool, device=gram.device)
    return gram.masked_fill(eye, 0.0)


def _hsic_of_hollow(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """:func:`unbiased_hsic` of two Gram matrices whose diagonals are already zero."""
    n = first.shape[0]
    first_rows, second_rows = first.sum(0), second.sum(0)
    trace = (first * second).sum()
    totals = first_rows.sum() * second_rows.sum() / ((n - 1) * (n - 2))
    cross = 2 * first_rows.dot(second_rows) / (n - 2)
    return (trace + totals - cross) / (n * (n - 3))


def normalized_hsic(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    r"""HSIC of two Gram matrices divided by the geometric mean of their self-HSICs.

    Kernel alignment (CKA) with unbiased estimates: about 0 for independent variables, 1 when
    the two Gram matrices agree. A variable without spread in the minibatch (a collapsed
    space, a single label) has nothing to depend on and scores 0.
    """
    first, second = _hollow(first), _hollow(second)
    self_first, self_second = _hsic_of_hollow(first, first), _hsic_of_hollow(second, second)
    scale = (self_first * self_second).clamp(min=0).sqrt()
    tiny = torch.finfo(scale.dtype).eps
    value = _hsic_of_hollow(first, second) / scale.clamp(min=tiny)
    return torch.where(scale > tiny, value, torch.zeros_like(value))


def within_label_residuals(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Subtract from each row the mean of the rows that share its label."""
    labels = labels.reshape(-1).long()
    present, group = torch.unique(labels, return_inverse=True)
    n_groups = present.numel()
    sums = values.new_zeros(n_groups, values.shape[1]).index_add(0, group, values)
    counts = torch.bincount(group, minlength=n_groups).to(values.dtype).unsqueeze(-1)
    return values - (sums / counts)[group]


def space_dependence(
    background: torch.Tensor,
    salient: torch.Tensor,
    perturbed: torch.Tensor,
    condition: torch.Tensor,
) -> torch.Tensor:
    """Measure how the salient means of perturbed cells depend on their background, per label.

    ``background``, ``salient``: cells x dimensions (posterior means); ``perturbed``: the
    rows to use; ``condition``: each row's integer label. The normalized HSIC between the
    background and the salient means minus each perturbation's minibatch mean: a test of
    independence given the label. Together with :func:`label_dependence` (the background
    independent of the label) it checks what the priors assume, the background independent
    of the label and the salient latent jointly, without counting twice what the label
    explains. Pooled over labels, the measure also saw each perturbation's own salient shift
    wherever the background had not quite forgotten the label.

    Gaussian kernels on each whole space see nonlinear dependence (a salient coordinate
    that is the square of a background one scores above 0) and do not average a dependent
    direction away over unrelated dimensions, as a mean of pairwise correlations does.
    The kernels use the median length scale only: a perturbation's effect may really
    depend on cell state (a knock-out whose programme shows in cycling cells only), and a
    local scale would count such fine structure as leakage.
    """
    if int(perturbed.sum()) < MIN_HSIC_ROWS:
        return background.new_zeros(())
    residuals = within_label_residuals(salient[perturbed], condition[perturbed])
    return normalized_hsic(rbf_gram(background[perturbed]), rbf_gram(residuals))


def label_dependence(
    background: torch.Tensor, perturbed: torch.Tensor, condition: torch.Tensor, n_conditions: int
) -> torch.Tensor:
    r"""Measure how far each perturbation's background distribution is from the controls'.

    For each perturbation :math:`g` with at least two cells in the minibatch, the unbiased
    squared maximum mean discrepancy between the background means of its cells and the
    controls', :math:`\bar K_{gg} + \bar K_{cc} - 2\bar K_{gc}` (mean kernel values over
    distinct pairs), divided by :math:`4\sqrt{\mathrm{HSIC}(K_{cc}, K_{cc})}`, the controls'
    kernel spread held constant for the gradient. That is the normalized HSIC
    (:func:`normalized_hsic`) between the background and the label that a minibatch of as
    many cells of :math:`g` as controls would give, but its expectation does not depend on
    how many cells of each the minibatch holds, so a small knock-out counts as a large one.
    A normalized HSIC pooled over all cells weighs each group by its squared share of the
    minibatch, so the controls and the large perturbations made up nearly all of it, and a
    small knock-out's programme could sit in the background unseen.

    Returns one value per condition code (``n_conditions`` of them): NaN for the controls
    and for every perturbation the minibatch cannot measure (fewer than two of its cells,
    or fewer than :data:`MIN_HSIC_ROWS` controls, or controls whose background means are
    all the same, where the normalizer vanishes). The training plan bounds each
    perturbation's value on its own, so that shifts that cancel across perturbations, or
    one knock-out's shift among many that hold, still count.

    About 0 when no perturbation moves the background distribution, as in a randomized
    screen. The kernel reads a local length scale too (see :func:`rbf_gram`), so a shift
    within every cell type counts, not only one of whole populations.
    """
    condition = condition.reshape(-1).long()
    values = background.new_full((n_conditions,), float("nan"))
    control = ~perturbed
    present, group, counts = torch.unique(condition, return_inverse=True, return_counts=True)
    tested = ~torch.isin(present, condition[control]) & (counts >= 2)
    n_controls = int(control.sum())
    if n_controls < MIN_HSIC_ROWS or not bool(tested.any()):
        return values
    kernel = _hollow(rbf_gram(background, local=True))
    controls = control.to(background.dtype)
    members = (group[None, :] == tested.nonzero()).to(background.dtype)
    sizes = counts[tested].to(background.dtype)
    within = (members @ kernel * members).sum(1) / (sizes * (sizes - 1))
    across = members @ kernel @ controls / (sizes * n_controls)
    control_kernel = kernel[control][:, control]
    among_controls = control_kernel.sum() / (n_controls * (n_controls - 1))
    spread = _hsic_of_hollow(control_kernel, control_kernel).detach()
    tiny = torch.finfo(background.dtype).eps
    if not bool(spread > tiny):
        return values
    # The NaN of unmeasured codes is a constant, not a 0 / 0: no NaN reaches the gradient.
    shifts = (within + among_controls - 2 * across) / (4 * spread.sqrt())
    return values.index_put((present[tested],), shifts)


def mean_of_measured(values: torch.Tensor, measure: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over the entries whose ``measure`` (default: the values) is not NaN.

    0 when no entry is measured. A 0-d tensor that is measured is its own mean.
    """
    measured = ~(values if measure is None else measure).isnan()
    return torch.where(measured, values, 0.0).sum() / measured.sum().clamp(min=1)


def relative_leakage(salient: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    r"""Salient energy of control cells relative to that of perturbed cells.

    :math:`\mathbb E_{\text{control}}\lVert\mu_s\rVert^2 /
    \mathbb E_{\text{perturbed}}\lVert\mu_s\rVert^2` over the salient posterior means: 0 when
    controls sit at the origin they decode with, 1 when the salient space does not tell them
    from perturbed cells. The denominator is held constant for the gradient, so meeting a
    bound means moving controls to the origin, not shrinking or inflating the whole space.
    Posterior variances are left out: controls never decode their salient code, and pulling
    its spread to 0 would fight the salient KL of perturbed cells that look like controls
    (null perturbations, escapers). A salient space that has collapsed on perturbed cells
    too (energy below :data:`MIN_SALIENT_ENERGY`) is measured against that floor instead,
    so the ratio stays finite.
    """
    energy = salient.pow(2).sum(-1)
    reference = masked_mean(energy.detach(), perturbed).clamp(min=MIN_SALIENT_ENERGY)
    return masked_mean(energy, ~perturbed) / reference
