"""The device-resident data path against the host loaders it stands in for (on CPU tensors)."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest
import scvi
import torch
from conftest import fit
from scipy import sparse

import compvi
from compvi._constants import DATA_SOURCES, REGISTRY_KEYS
from compvi.dataloaders import _device_data
from compvi.dataloaders._device_data import DeviceData, choose_data_path
from compvi.dataloaders._device_loaders import (
    DeviceInOrderLoader,
    DevicePairedLoader,
    in_order_loader,
)
from compvi.dataloaders._paired import InOrderDataLoader, PairedDataLoader
from compvi.dataloaders._splitter import ComparativeDataSplitter

COVARIATES = {
    "batch_key": "batch",
    "size_factor_key": "size_factor",
    "categorical_covariate_keys": ["donor"],
    "continuous_covariate_keys": ["percent_mito"],
}


def _register(adata, layout="csr"):
    """Register ``adata`` with every kind of field, its counts in ``layout``."""
    adata.obs["size_factor"] = np.random.default_rng(2).uniform(0.5, 2.0, adata.n_obs)
    counts = sparse.csr_matrix(adata.X)
    adata.X = {"csr": counts, "csc": counts.tocsc(), "dense": counts.toarray()}[layout]
    compvi.ComparativeVI.setup_anndata(
        adata, condition_key="condition", control_category="control", **COVARIATES
    )
    model = compvi.ComparativeVI(adata)
    perturbed = model._is_perturbed(model.adata_manager)
    return model, np.flatnonzero(~perturbed), np.flatnonzero(perturbed)


def _assert_same_tensors(expected: dict, actual: dict) -> None:
    """Same keys, and bit-identical tensors of the same dtype and shape for each."""
    assert list(actual) == list(expected)
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype, key
        assert actual[key].shape == tensor.shape, key
        assert actual[key].layout == torch.strided, key
        assert torch.equal(actual[key], tensor), key


@pytest.mark.parametrize("layout", ["csr", "csc", "dense"])
@pytest.mark.parametrize("sparse_gather", ["torch", "scipy"])
def test_device_loader_yields_the_host_loaders_minibatches(screen, layout, sparse_gather):
    model, control, perturbed = _register(screen, layout)
    manager = model.adata_manager
    kwargs = {"batch_size": 24, "shuffle": True}
    host = PairedDataLoader(manager, control, perturbed, **kwargs)
    data = DeviceData(manager, "cpu", sparse_gather=sparse_gather)
    device = DevicePairedLoader(data, control, perturbed, **kwargs)
    assert len(device) == len(host)
    n_steps = 0
    for _ in range(3):  # passes and restarts of the smaller group, over several epochs
        for expected, actual in zip(host, device, strict=True):
            assert set(actual) == {DATA_SOURCES.CONTROL, DATA_SOURCES.PERTURBED}
            for name in expected:
                _assert_same_tensors(expected[name], actual[name])
            n_steps += 1
    assert n_steps == 3 * len(host)
    # the smaller group restarted within an epoch, as on the host loader
    assert data.n_rows == screen.n_obs and len(control) < 24 * len(host)
    assert device.samplers[DATA_SOURCES.CONTROL].passes > 3


@pytest.mark.parametrize("world_size", [2, 3])
def test_device_loader_shards_as_the_host_loader(screen, world_size):
    model, control, perturbed = _register(screen)
    data = DeviceData(model.adata_manager, "cpu", sparse_gather="torch")
    for rank in range(world_size):
        kwargs = {"batch_size": 8, "shuffle": True, "rank": rank, "world_size": world_size}
        host = PairedDataLoader(model.adata_manager, control, perturbed, drop_last=True, **kwargs)
        device = DevicePairedLoader(data, control, perturbed, drop_last=True, **kwargs)
        for expected, actual in zip(host, device, strict=True):
            for name in expected:
                _assert_same_tensors(expected[name], actual[name])


def test_torch_gather_of_a_csr_with_duplicates_sums_them_as_toarray(screen):
    model, _, _ = _register(screen)
    manager = model.adata_manager
    counts = sparse.csr_matrix(screen.X)
    # A non-canonical CSR: every entry of row 0 stored twice, in reverse order.
    start, stop = counts.indptr[:2]
    doubled = sparse.csr_matrix(
        (
            np.concatenate([counts.data[start:stop][::-1], counts.data]),
            np.concatenate([counts.indices[start:stop][::-1], counts.indices]),
            np.concatenate([[0], counts.indptr[1:] + (stop - start)]),
        ),
        shape=counts.shape,
    )
    assert not doubled.has_canonical_format
    screen.X = doubled
    rows = np.array([5, 0, 17, 0])
    for sparse_gather in ("torch", "scipy"):
        data = DeviceData(manager, "cpu", sparse_gather=sparse_gather)
        gathered = data.gather(torch.as_tensor(rows), int(data.nonzeros(rows, [0, 4])[0]))
        np.testing.assert_array_equal(
            gathered[REGISTRY_KEYS.X_KEY].numpy(), doubled[rows].toarray().astype(np.float32)
        )
    np.testing.assert_array_equal(doubled[0].toarray(), 2 * counts[0].toarray())


@pytest.mark.parametrize(
    "indices",
    [
        None,
        np.array([250, 3, 3, 120, 7, 299, 0, 41]),
        np.arange(300) % 2 == 0,
        np.array([], dtype=int),
    ],
    ids=["all", "unsorted-with-repeats", "mask", "none"],
)
@pytest.mark.parametrize("layout", ["csr", "dense"])
def test_in_order_device_loader_equals_the_host_loader(screen, indices, layout):
    model, _, _ = _register(screen, layout)
    host = InOrderDataLoader(model.adata_manager, indices, batch_size=5)
    device = DeviceInOrderLoader(model.adata_manager, indices, batch_size=5, device="cpu")
    np.testing.assert_array_equal(device.indices, host.indices)
    batches = list(device)
    assert len(batches) == len(device) == len(host)
    for expected, actual in zip(host, batches, strict=True):
        _assert_same_tensors(expected, actual)


def test_auto_holds_in_memory_data_and_says_why(screen):
    model, _, _ = _register(screen)
    choice = choose_data_path(model.adata_manager, "cpu")
    assert choice.on_device and choice.device == torch.device("cpu")
    assert "in memory, below the 8.0 GiB cap on CPU" in choice.describe()
    assert choice.describe().startswith("compvi data path: device: minibatches are gathered")


def test_auto_falls_back_to_the_loader_above_the_cap_or_with_loader_options(screen, monkeypatch):
    model, _, _ = _register(screen)
    manager = model.adata_manager
    held = _device_data.resident_nbytes(manager)
    # values, int32 column indices and int64 row pointers, then the obs fields
    counts = screen.X
    obs_bytes = 300 * (8 + 4 + 4 + 8 + 4)  # batch, condition, size factor, donor, mito
    assert held == counts.nnz * 8 + 301 * 8 + obs_bytes
    monkeypatch.setattr(_device_data, "CPU_BYTES_CAP", held - 1)
    choice = choose_data_path(manager, "cpu")
    assert choice.path == "loader" and "exceed the" in choice.reason
    monkeypatch.setattr(_device_data, "CPU_BYTES_CAP", held)
    assert choose_data_path(manager, "cpu").on_device
    choice = choose_data_path(manager, "cpu", loader_options=["batch_size", "num_workers"])
    assert choice.path == "loader" and "num_workers" in choice.reason
    assert choose_data_path(manager, "cpu", "loader").path == "loader"
    with pytest.raises(ValueError, match="data_path='fast' is not one of"):
        choose_data_path(manager, "cpu", "fast")


def test_backed_data_stay_on_the_host_loader(screen, tmp_path):
    screen.write_h5ad(tmp_path / "screen.h5ad")
    backed = ad.read_h5ad(tmp_path / "screen.h5ad", backed="r")
    compvi.ComparativeVI.setup_anndata(
        backed, condition_key="condition", control_category="control"
    )
    manager = compvi.ComparativeVI(backed).adata_manager
    choice = choose_data_path(manager, "cpu")
    assert choice.path == "loader" and "backed" in choice.reason
    with pytest.raises(ValueError, match=r"data_path='device' holds .* backed"):
        choose_data_path(manager, "cpu", "device")
    assert isinstance(in_order_loader(manager, None, 16, "cpu"), InOrderDataLoader)


def test_splitter_logs_its_choice_once_and_frees_the_data(screen, caplog):
    model, control, perturbed = _register(screen)
    splitter = ComparativeDataSplitter(
        model.adata_manager, control, perturbed, train_size=0.8, batch_size=16
    )
    splitter.setup()
    with caplog.at_level(logging.INFO, logger="compvi"):
        train, validation = splitter.train_dataloader(), splitter.val_dataloader()
    assert isinstance(train, DevicePairedLoader) and train.data is validation.data
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("compvi")]
    assert len(lines) == 1 and lines[0].startswith("compvi data path: device")
    splitter.teardown("fit")
    assert splitter.data_path_choice is None and train.data.fields == {}
    loader = ComparativeDataSplitter(
        model.adata_manager, control, perturbed, batch_size=16, data_path="loader"
    )
    loader.setup()
    assert isinstance(loader.train_dataloader(), PairedDataLoader)
    with pytest.raises(ValueError, match="data_path='gpu' is not one of"):
        ComparativeDataSplitter(model.adata_manager, control, perturbed, data_path="gpu")


def _trained(adata, data_path):
    scvi.settings.seed = 0
    return fit(
        adata,
        max_epochs=2,
        setup=COVARIATES,
        train_size=0.8,
        datasplitter_kwargs={"data_path": data_path},
    )


def test_training_on_the_device_path_equals_the_loader_path(screen, caplog):
    screen.obs["size_factor"] = np.random.default_rng(2).uniform(0.5, 2.0, screen.n_obs)
    with caplog.at_level(logging.INFO, logger="compvi"):
        on_device = _trained(screen.copy(), "auto")
    assert any(r.getMessage().startswith("compvi data path: device") for r in caplog.records)
    on_loader = _trained(screen.copy(), "loader")
    for name, weight in on_loader.module.state_dict().items():
        torch.testing.assert_close(on_device.module.state_dict()[name], weight, msg=name)
    for column in ("train_loss", "elbo_train", "mgda_weight"):
        np.testing.assert_allclose(
            on_device.history[column].to_numpy(dtype=float),
            on_loader.history[column].to_numpy(dtype=float),
            rtol=1e-6,
        )


def test_inference_on_the_device_path_equals_the_loader_path(screen, monkeypatch):
    screen.obs["size_factor"] = np.random.default_rng(2).uniform(0.5, 2.0, screen.n_obs)
    model = _trained(screen, "auto")
    indices = np.array([299, 4, 4, 150, 0, 73])
    loader = model._make_data_loader(screen, indices, batch_size=4)
    assert isinstance(loader, DeviceInOrderLoader)
    results = {}
    for path, cap in (("device", _device_data.CPU_BYTES_CAP), ("loader", 0)):
        monkeypatch.setattr(_device_data, "CPU_BYTES_CAP", cap)
        results[path] = [
            model.get_latent_representation(indices=indices, batch_size=4),
            model.get_latent_representation(representation_kind="background", batch_size=7),
            model.get_normalized_expression(indices=indices, batch_size=4),
        ]
    assert isinstance(model._make_data_loader(screen, indices, batch_size=4), InOrderDataLoader)
    for device, loader in zip(results["device"], results["loader"], strict=True):
        np.testing.assert_allclose(np.asarray(device), np.asarray(loader), rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on the GPU machine)")
def test_cuda_gather_needs_no_synchronisation_and_equals_cpu(screen):
    model, control, perturbed = _register(screen)
    manager = model.adata_manager
    host = PairedDataLoader(manager, control, perturbed, batch_size=32, shuffle=True)
    device = DevicePairedLoader(
        DeviceData(manager, "cuda"), control, perturbed, batch_size=32, shuffle=True
    )
    batches = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in device:
            batches.append(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for expected, actual in zip(host, batches, strict=True):
        for name in expected:
            _assert_same_tensors(expected[name], {k: v.cpu() for k, v in actual[name].items()})
