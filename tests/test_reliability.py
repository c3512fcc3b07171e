"""The reliability matrix (docs/reliability.md): one test per situation compvi must handle.

Bad input fails with an error naming the field and the fix and leaves the user's AnnData
untouched; faults during training or loading are reported, not silently absorbed. Rows
already covered in ``test_setup_anndata.py`` are referenced from the docs page instead.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from conftest import fit
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from scipy import sparse

import compvi
from compvi._constants import REGISTRY_KEYS
from compvi.data import simulate_screen


def setup(adata, **kwargs):
    kwargs.setdefault("condition_key", "condition")
    kwargs.setdefault("control_category", "control")
    compvi.ComparativeVI.setup_anndata(adata, **kwargs)


def assert_untouched(adata, before):
    """The failed call wrote nothing: same obs, uns keys and counts."""
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    assert set(adata.uns) == set(before.uns)
    x, x0 = adata.X, before.X
    if sparse.issparse(x):
        x, x0 = x.toarray(), x0.toarray()
    np.testing.assert_array_equal(x, x0)


def small_model(adata, **kwargs):
    return compvi.ComparativeVI(
        adata, n_background_latent=2, n_salient_latent=2, n_hidden=16, **kwargs
    )


# ------------------------------------------------------------------ bad input
def test_empty_anndata_raises_and_leaves_it_untouched(screen):
    empty = screen[:0].copy()
    before = empty.copy()
    with pytest.raises(ValueError, match=r"empty \(0 cells x 40 genes\)"):
        setup(empty)
    assert_untouched(empty, before)


def test_single_gene_trains_and_gives_finite_latents(screen):
    gene = int(np.argmax(np.asarray(screen.X.sum(axis=0)).ravel()))
    one_gene = screen[:, [gene]].copy()
    one_gene = one_gene[np.asarray(one_gene.X.sum(axis=1)).ravel() > 0].copy()
    setup(one_gene)
    model = small_model(one_gene)
    model.train(max_epochs=1, batch_size=64, enable_progress_bar=False)
    for kind in ("salient", "background"):
        latent = model.get_latent_representation(representation_kind=kind)
        assert latent.shape == (one_gene.n_obs, 2)
        assert np.isfinite(latent).all()


def test_condition_with_one_cell_warns_trains_and_embeds_the_cell(screen):
    screen.obs["condition"] = screen.obs["condition"].astype(str)
    screen.obs.iloc[0, screen.obs.columns.get_loc("condition")] = "P_single"
    with pytest.warns(UserWarning, match="fewer than 3 cells"):
        setup(screen)
    model = small_model(screen, prior="conditional")
    model.train(max_epochs=1, batch_size=64, enable_progress_bar=False)
    assert "P_single" in model.conditions
    latent = model.get_latent_representation()
    assert np.isfinite(latent[0]).all()


def test_all_control_cells_raise_and_leave_adata_untouched(screen):
    screen.obs["condition"] = "control"
    before = screen.copy()
    with pytest.raises(ValueError, match=r"adata.obs\['condition'\].*needs perturbed cells"):
        setup(screen)
    assert_untouched(screen, before)


def test_duplicated_obs_names_raise_naming_obs_names_make_unique(screen):
    screen.obs_names = [f"cell_{i // 2}" for i in range(screen.n_obs)]
    before = screen.copy()
    with pytest.raises(ValueError, match=r"adata\.obs_names has 150 duplicated.*make_unique"):
        setup(screen)
    assert_untouched(screen, before)
    screen.obs_names_make_unique()
    setup(screen)  # the fix the message names works


@pytest.mark.parametrize(
    ("value", "dtype", "layer"),
    [(3e9, np.int64, None), (2**31, np.int64, "counts"), (1e39, np.float64, None)],
)
def test_counts_beyond_int32_raise_naming_the_matrix(screen, value, dtype, layer):
    x = screen.X.toarray().astype(dtype)
    x[4, 2] = value
    if layer is None:
        screen.X = x
        name = r"adata\.X"
    else:
        screen.layers[layer] = x
        name = r"adata\.layers\['counts'\]"
    before = screen.copy()
    with pytest.raises(ValueError, match=f"{name} contains counts up to .*above 2\\*\\*31 - 1"):
        setup(screen, layer=layer)
    assert_untouched(screen, before)


def test_counts_at_the_int32_limit_are_accepted(screen):
    x = screen.X.toarray().astype(np.int64)
    x[4, 2] = 2**31 - 1
    screen.X = x
    setup(screen)
    # Registered as given: the largest count reaches the model unchanged.
    model = small_model(screen)
    counts = model.adata_manager.get_from_registry(compvi._constants.REGISTRY_KEYS.X_KEY)
    assert counts[4, 2] == 2**31 - 1 and counts.max() == 2**31 - 1


@pytest.mark.parametrize("scale", [1.0, 0.05])
def test_counts_with_rounding_noise_are_accepted_with_scvi_warning(screen, scale):
    # scale=0.05 keeps the largest count at most 20, where log-normalized data would be refused.
    x = np.round(screen.X.toarray() * scale)
    x[x.sum(axis=1) == 0, 0] = 1
    noisy = (x + 1e-7 * (x > 0)).astype(np.float64)
    screen.X = sparse.csr_matrix(noisy)
    with pytest.warns(UserWarning, match="count data"):
        setup(screen)
    model = small_model(screen)  # not mistaken for log-normalized data
    model.train(max_epochs=1, batch_size=64, enable_progress_bar=False)
    assert np.isfinite(model.get_latent_representation()).all()


def test_nan_in_a_covariate_raises_and_leaves_adata_untouched(screen):
    screen.obs.iloc[0, screen.obs.columns.get_loc("percent_mito")] = np.nan
    before = screen.copy()
    with pytest.raises(ValueError, match=r"adata.obs\['percent_mito'\].*1 missing values"):
        setup(screen, continuous_covariate_keys=["percent_mito"])
    assert_untouched(screen, before)


def test_sparse_array_counts_raise_naming_csr_matrix(screen):
    screen.X = sparse.csr_array(screen.X)
    before = screen.copy()
    with pytest.raises(ValueError, match=r"adata\.X is a scipy sparse array.*csr_matrix"):
        setup(screen)
    assert_untouched(screen, before)


# ---------------------------------------------------------------------- faults
class _PoisonSizeFactor(Callback):
    """Make one perturbed cell's size factor NaN at a given step, after a weight snapshot.

    The size factor enters the likelihood only (not the encoder), so the NaN reaches the
    loss, as an overflowing likelihood would.
    """

    def __init__(self, step: int) -> None:
        self.step, self.weights = step, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            self.weights = copy.deepcopy(dict(pl_module.module.named_parameters()))
            batch["perturbed"][REGISTRY_KEYS.SIZE_FACTOR_KEY][0] = float("nan")


def test_nan_loss_mid_training_names_the_term_and_keeps_last_good_weights(screen):
    screen.obs["size_factor"] = np.asarray(screen.X.sum(axis=1)).ravel() / 100
    setup(screen, size_factor_key="size_factor")
    model = small_model(screen)
    poison = _PoisonSizeFactor(step=3)
    with pytest.raises(FloatingPointError, match="reconstruction_loss of perturbed cells = nan"):
        model.train(max_epochs=3, batch_size=64, enable_progress_bar=False, callbacks=[poison])
    assert poison.weights is not None
    # No optimizer step was taken on the NaN loss. (Batch-norm running statistics, buffers,
    # did see that step's encoder inputs, which were finite.)
    for name, value in model.module.named_parameters():
        assert torch.isfinite(value).all(), name
        torch.testing.assert_close(value, poison.weights[name], rtol=0, atol=0)
    assert all(torch.isfinite(b.float()).all() for b in model.module.buffers())


class _Interrupt(Exception):
    pass


class _InterruptAt(Callback):
    """Simulate a crash at the start of an epoch, after the previous checkpoint."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise _Interrupt


def test_resumed_training_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    # scvi-tools adds its own SaveCheckpoint when checkpointing is on; keep it in tmp_path.
    monkeypatch.setattr(scvi.settings, "logging_dir", str(tmp_path / "scvi"))
    n_epochs = 2

    def train(name, **kwargs):
        scvi.settings.seed = 0
        adata = simulate_screen(n_cells=200, n_genes=20, seed=1)
        setup(adata)
        # The sparse prior draws Gumbel noise and has the scheduled edge bound.
        model = small_model(adata, prior="sparse")
        checkpoint = ModelCheckpoint(
            dirpath=tmp_path / name, save_last=True, save_on_train_epoch_end=True
        )
        callbacks = [checkpoint, *kwargs.pop("callbacks", [])]
        model.train(
            max_epochs=2 * n_epochs,
            batch_size=32,
            edge_bound=1.0,
            plan_kwargs={"edge_anneal_fraction": 1.0},
            enable_progress_bar=False,
            enable_checkpointing=True,
            callbacks=callbacks,
            **kwargs,
        )
        return model

    uninterrupted = train("uninterrupted")
    with pytest.raises(_Interrupt):
        train("interrupted", callbacks=[_InterruptAt(n_epochs)])
    resumed = train("resumed", ckpt_path=str(tmp_path / "interrupted" / "last.ckpt"))

    expected, got = uninterrupted.module.state_dict(), resumed.module.state_dict()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6)
    for key in ("leakage_multiplier", "dependence_multiplier", "edges_multiplier", "edges_bound"):
        # The resumed run logs only the epochs after the checkpoint.
        np.testing.assert_allclose(
            resumed.history[key].to_numpy().ravel().astype(float),
            uninterrupted.history[key].to_numpy().ravel()[n_epochs:].astype(float),
            rtol=0,
            atol=1e-6,
            err_msg=key,
        )
    np.testing.assert_allclose(
        resumed.get_latent_representation(),
        uninterrupted.get_latent_representation(),
        rtol=0,
        atol=1e-6,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    scvi.settings.seed = 0
    adata = simulate_screen(n_cells=200, n_genes=20, seed=3)
    model = fit(adata, max_epochs=2)
    path = tmp_path_factory.mktemp("saved") / "model"
    model.save(path, save_anndata=False)
    return model, adata, path


def test_load_onto_reordered_genes_gives_the_same_embedding(saved):
    model, adata, path = saved
    reordered = adata[:, adata.var_names[::-1]].copy()
    reordered.obs = reordered.obs[["condition"]].copy()
    before = reordered.copy()
    loaded = compvi.ComparativeVI.load(path, adata=reordered)
    assert list(loaded.adata.var_names) == list(adata.var_names)
    assert_untouched(reordered, before)  # the model holds a reordered copy
    assert list(reordered.var_names) == list(before.var_names)
    for kind in ("salient", "background"):
        np.testing.assert_allclose(
            loaded.get_latent_representation(representation_kind=kind),
            model.get_latent_representation(representation_kind=kind),
            rtol=0,
            atol=1e-5,
        )
    with pytest.raises(ValueError, match=r"3 missing \(e.g. \['gene_0', 'gene_1', 'gene_2'\]\)"):
        compvi.ComparativeVI.load(path, adata=adata[:, 3:].copy())


def test_latent_of_reordered_genes_without_load_raises_with_the_fix(saved):
    # scvi-tools would transfer the registration by shape and mis-map the genes silently.
    model, adata, _ = saved
    reordered = adata[:, adata.var_names[::-1]].copy()
    with pytest.raises(ValueError, match=r"another order.*adata\[:, model\.adata\.var_names\]"):
        model.get_latent_representation(adata=reordered)
    fixed = reordered[:, model.adata.var_names].copy()
    np.testing.assert_allclose(
        model.get_latent_representation(adata=fixed),
        model.get_latent_representation(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_loading_a_contrastivevi_folder_names_the_class(tmp_path):
    adata = simulate_screen(n_cells=100, n_genes=20, seed=4)
    scvi.external.ContrastiveVI.setup_anndata(adata)
    contrastive = scvi.external.ContrastiveVI(adata, n_hidden=8)
    contrastive.save(tmp_path / "contrastive", save_anndata=False)
    target = adata.copy()
    with pytest.raises(
        ValueError,
        match=r"holds a ContrastiveVI model, not a ComparativeVI; "
        r"load it with scvi\.external\.ContrastiveVI\.load",
    ):
        compvi.ComparativeVI.load(tmp_path / "contrastive", adata=target)
