"""Statistics of the global minibatch under distributed data-parallel training.

Each process holds a shard of the global minibatch. Averaging the processes' gradients
handles every loss term that is a mean over cells, but batch norm and the minibatch measures
(dependence, background shift) are statistics of the whole minibatch: they need the other
processes' rows, through collectives that carry gradients back to each process's own rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional
from torch import nn


def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes, differentiably (its gradient is summed back)."""
    return dist_functional.all_reduce(tensor, op=dist.ReduceOp.SUM)


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Stack the rows of a tensor from all processes in rank order, differentiably.

    The processes' row counts may differ (the shards of a last, smaller minibatch), so each
    pads to the largest before the collective, which needs one shape everywhere.
    """
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padding = tensor.new_zeros((max(sizes) - tensor.shape[0], *tensor.shape[1:]))
    gathered = dist_functional.all_gather(torch.cat([tensor, padding]))
    return torch.cat([rows[:size] for rows, size in zip(gathered, sizes, strict=True)])


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """Batch norm that, while ``sum_over_processes`` is set, normalizes by the global minibatch.

    Unlike :class:`torch.nn.SyncBatchNorm` it also runs on CPU (gloo), and it is a
    :class:`torch.nn.BatchNorm1d` with the same parameters and buffers otherwise, so saved
    weights load either way. The training plan sets ``sum_over_processes`` for the length of
    a distributed fit.
    """

    sum_over_processes: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` (cells x features) by the global minibatch's mean and variance."""
        if not self.training or self.sum_over_processes is None:
            return super().forward(x)
        reduce = self.sum_over_processes
        # Two passes (mean, then centred squares), as batch norm computes the variance, so the
        # result matches one process holding the whole minibatch to rounding.
        totals = reduce(torch.cat([x.sum(0), x.new_tensor([x.shape[0]])]))
        n = totals[-1]
        mean = totals[:-1] / n
        var = reduce((x - mean).pow(2).sum(0)) / n
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1).clamp(min=1), self.momentum)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
