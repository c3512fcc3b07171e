from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fit
from torch import nn

import compvi
from compvi._constants import DATA_SOURCES, REGISTRY_KEYS
from compvi.dataloaders._paired import PairedDataLoader, ShardedBatchSampler
from compvi.module._distributed import GlobalBatchNorm1d
from compvi.module._vae import ComparativeVAE

SCRIPT = Path(__file__).with_name("ddp_fit.py")


def _shards(indices, batch_size, world_size, **kwargs):
    """Every rank's minibatches of one pass."""
    return [
        list(
            ShardedBatchSampler(
                indices, batch_size, rank=rank, world_size=world_size, seed=7, **kwargs
            )
        )
        for rank in range(world_size)
    ]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("n_cells", [7, 60, 61, 97])
def test_shards_cover_each_global_minibatch_of_a_one_process_run_once(world_size, n_cells):
    indices = np.arange(1000, 1000 + n_cells)
    one_process = _shards(indices, 8 * world_size, 1, shuffle=True)[0]
    ranks = _shards(indices, 8, world_size, shuffle=True)
    # every rank takes the same number of steps
    assert len({len(batches) for batches in ranks}) == 1
    if 0 < n_cells % (8 * world_size) < world_size:
        # too few cells left to shard: the last global minibatch joins the one before
        one_process[-2:] = [np.concatenate(one_process[-2:])]
    for step, global_batch in enumerate(one_process):
        shards = [batches[step] for batches in ranks]
        assert all(len(shard) > 0 for shard in shards)
        union = np.concatenate(shards)
        assert len(union) == len(set(union)), "a cell is in two shards"
        assert set(union) == set(global_batch)
    seen = np.concatenate([np.concatenate(batches) for batches in ranks])
    assert sorted(seen) == list(indices), "a cell was dropped or duplicated within the pass"


def test_a_last_global_minibatch_smaller_than_the_process_count_joins_the_one_before():
    ranks = _shards(np.arange(17), 4, 2, shuffle=False)  # global minibatches of 8: 8, 8, 1
    assert [len(b) for b in ranks[0]] == [4, 5]
    assert [len(b) for b in ranks[1]] == [4, 4]


def test_each_pass_draws_a_new_permutation_shared_by_all_ranks():
    samplers = [
        ShardedBatchSampler(np.arange(40), 5, shuffle=True, rank=r, world_size=2) for r in range(2)
    ]
    first = [np.concatenate(list(sampler)) for sampler in samplers]
    second = [np.concatenate(list(sampler)) for sampler in samplers]
    # Each pass, the ranks' shards together cover the cells once: one shared permutation.
    for shards in (first, second):
        assert sorted(np.concatenate(shards)) == list(range(40))
    assert not np.array_equal(first[0], second[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"indices": [1], "world_size": 2}, "Cannot shard 1 cells over 2 processes"),
        ({"indices": list(range(5)), "drop_last": True}, "drop_last=True drops all 5 cells"),
        ({"indices": list(range(5)), "rank": 2, "world_size": 2}, "rank must be in"),
    ],
)
def test_sampler_rejects_impossible_shards(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShardedBatchSampler(batch_size=8, shuffle=False, **kwargs)


def test_paired_loader_shards_both_groups_and_pairs_every_step(screen):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control"
    )
    model = compvi.ComparativeVI(screen)
    perturbed = model._is_perturbed(model.adata_manager)
    control_idx, perturbed_idx = np.flatnonzero(~perturbed), np.flatnonzero(perturbed)

    def cells(loader):
        out = []
        for batch in loader:
            out.append({name: batch[name][REGISTRY_KEYS.X_KEY].numpy() for name in DATA_SOURCES})
        return out

    def loader(batch_size, rank, world_size):
        return PairedDataLoader(
            model.adata_manager,
            control_idx,
            perturbed_idx,
            batch_size=batch_size,
            shuffle=True,
            rank=rank,
            world_size=world_size,
        )

    one = cells(loader(32, 0, 1))
    ranks = [cells(loader(16, r, 2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(one)
    for step, batch in enumerate(one):
        for name in DATA_SOURCES:
            union = np.concatenate([ranks[r][step][name] for r in range(2)])
            # the same cells (rows of counts), whatever the order
            np.testing.assert_array_equal(np.sort(union.sum(1)), np.sort(batch[name].sum(1)))


def test_minibatch_measures_over_a_gathered_minibatch_equal_the_whole_minibatch():
    module = ComparativeVAE(n_input=5, control_codes=[0], n_conditions=3, n_salient_latent=2)
    rng = np.random.default_rng(0)
    loc_z = torch.as_tensor(rng.normal(size=(40, 3)), dtype=torch.float32)
    loc_s = torch.as_tensor(rng.normal(size=(40, 2)), dtype=torch.float32)
    loc_s[:, 0] += 0.7 * loc_z[:, 0]
    condition = torch.as_tensor(rng.integers(0, 3, 40))
    loc_z[condition == 1, 1] += 1.0  # the background knows one condition

    def outputs(rows):
        return {"background_mean": loc_z[rows], "salient_mean": loc_s[rows]}

    everything, mine = slice(None), slice(0, 25)
    whole = module._minibatch_measures(outputs(everything), condition, None)
    # Rank 0's view of two processes: its own 25 rows, then the other process's 15.
    other = torch.cat([loc_z[25:], loc_s[25:], condition[25:, None].float()], 1)
    shard = module._minibatch_measures(
        outputs(mine), condition[mine], lambda rows: torch.cat([rows, other])
    )
    alone = module._minibatch_measures(outputs(mine), condition[mine], None)
    for name, value in whole.items():
        torch.testing.assert_close(shard[name], value, equal_nan=True)
        assert not torch.allclose(alone[name], value, equal_nan=True)


def test_global_batch_norm_on_one_process_is_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(32, 6) * 3 + 1
    reference = nn.BatchNorm1d(6, momentum=0.01, eps=1e-3)
    nn.init.normal_(reference.weight)
    nn.init.normal_(reference.bias)
    layer = GlobalBatchNorm1d(6, momentum=0.01, eps=1e-3)
    layer.load_state_dict(reference.state_dict())
    # A sum over one process is the identity: the global path must reproduce batch norm.
    layer.sum_over_processes = lambda tensor: tensor
    torch.testing.assert_close(layer(x), reference(x))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(layer, name), getattr(reference, name))
    layer.eval()
    reference.eval()
    torch.testing.assert_close(layer(x), reference(x))


def test_one_process_training_leaves_no_distributed_hooks(screen):
    model = fit(screen, max_epochs=1)
    assert all(
        layer.sum_over_processes is None
        for layer in model.module.modules()
        if isinstance(layer, GlobalBatchNorm1d)
    )
    assert any(isinstance(layer, GlobalBatchNorm1d) for layer in model.module.modules())


def _run(out: Path, devices: int, batch_size: int) -> list[dict]:
    result = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), str(out)),
            *("--devices", str(devices), "--batch-size", str(batch_size)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(devices)]


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch was built without the gloo backend of torch.distributed",
)
def test_two_process_ddp_on_cpu_matches_one_process_with_the_same_global_minibatch(tmp_path):
    ranks = _run(tmp_path / "ddp", devices=2, batch_size=16)
    (single,) = _run(tmp_path / "single", devices=1, batch_size=32)
    assert len(ranks[0]["steps"]) == len(ranks[1]["steps"]) == len(single["steps"]) == 15

    epochs = {}
    for step, one in enumerate(single["steps"]):
        shards = [rank["steps"][step] for rank in ranks]
        # MGDA's weight and the multipliers are identical on both ranks ...
        assert shards[0]["mgda_weight"] == shards[1]["mgda_weight"]
        assert shards[0]["multipliers"] == shards[1]["multipliers"]
        # ... and follow the one-process run
        assert shards[0]["mgda_weight"] == pytest.approx(one["mgda_weight"], abs=1e-5)
        for name, value in one["multipliers"].items():
            assert shards[0]["multipliers"][name] == pytest.approx(value, rel=1e-5, abs=1e-6)
        for group in DATA_SOURCES:
            a, b = (set(shard["cells"][group]) for shard in shards)
            assert not a & b, f"a {group} cell was loaded by both ranks in one step"
            assert a | b == set(one["cells"][group])
        perturbed = epochs.setdefault(one["epoch"], [])
        perturbed += [c for shard in shards for c in shard["cells"][DATA_SOURCES.PERTURBED]]
    # Within an epoch the ranks load every training cell of the larger group exactly once.
    for cells in epochs.values():
        assert sorted(cells) == sorted(single["cells"][DATA_SOURCES.PERTURBED])

    for name, value in single["state_dict"].items():
        torch.testing.assert_close(ranks[0]["state_dict"][name], ranks[1]["state_dict"][name])
        torch.testing.assert_close(
            ranks[0]["state_dict"][name].float(), value.float(), atol=2e-5, rtol=1e-4
        )
