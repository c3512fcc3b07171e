from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scvi
import torch
from conftest import fit

import compvi
from compvi._constants import CONSTRAINTS, DEFAULT_BOUNDS, REGISTRY_KEYS
from compvi.data import simulate_screen
from compvi.dataloaders._paired import concatenate_sources
from compvi.metrics import affine_r2
from compvi.model._training import default_kl_warmup_epochs
from compvi.train._constraints import MAX_MULTIPLIER, MIN_MULTIPLIER
from compvi.train._training_plan import ComparativeTrainingPlan


def _history(model, key):
    return model.history[key].to_numpy(dtype=float).ravel()


# ------------------------------------------------------------------ outputs
def test_latent_shapes_dtypes_and_indices(trained):
    model, adata = trained
    salient = model.get_latent_representation()
    background = model.get_latent_representation(representation_kind="background")
    assert salient.shape == (adata.n_obs, 4) and background.shape == (adata.n_obs, 4)
    assert salient.dtype == np.float32 and np.isfinite(salient).all()
    subset = model.get_latent_representation(indices=[5, 1, 7], batch_size=2)
    np.testing.assert_allclose(subset, salient[[5, 1, 7]], rtol=1e-5, atol=1e-6)
    sampled = model.get_latent_representation(give_mean=False)
    assert not np.allclose(sampled, salient)
    # Draws scatter around the posterior means: their average over draws approaches them.
    average = np.mean([model.get_latent_representation(give_mean=False) for _ in range(30)], 0)
    assert np.abs(average - salient).mean() < 0.3 * np.abs(sampled - salient).mean()


def test_unknown_representation_kind_raises(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="representation_kind='latent' is not one of"):
        model.get_latent_representation(representation_kind="latent")


def test_controls_sit_near_zero_in_the_salient_space(trained):
    model, adata = trained
    salient = model.get_latent_representation()
    control = (adata.obs["condition"] == "control").to_numpy()
    control_norm = np.linalg.norm(salient[control], axis=1).mean()
    perturbed_norm = np.linalg.norm(salient[~control], axis=1).mean()
    assert control_norm < 0.35 * perturbed_norm


# ----------------------------------------------------------------- training
def test_training_lowers_both_objectives(trained):
    model, _ = trained
    for key in ("loss_control_train", "loss_perturbed_train"):
        curve = _history(model, key)
        assert len(curve) == 40
        assert curve[-5:].mean() < curve[:5].mean() - 5


def test_mgda_weight_is_logged_in_unit_interval(screen):
    model = fit(screen, max_epochs=4, balancing="mgda")
    alpha = _history(model, "mgda_weight")
    assert ((alpha >= 0) & (alpha <= 1)).all()
    assert not np.allclose(alpha, 0.5)  # a constant 0.5 would mean plain summation


def test_multiplier_follows_the_relative_violation_and_leakage_ends_below(trained):
    model, _ = trained
    leakage = _history(model, "leakage_train")
    multiplier = _history(model, "leakage_multiplier")
    bound = DEFAULT_BOUNDS[CONSTRAINTS.LEAKAGE]
    np.testing.assert_allclose(_history(model, "leakage_bound"), bound, rtol=1e-6)
    # Logged at the start of each epoch's steps: while an epoch is far above the bound the
    # multiplier it starts with is larger than the last one.
    violated = np.flatnonzero(leakage[:-1] > 2 * bound)
    assert len(violated) >= 3
    assert (np.diff(multiplier)[violated] > 0).all()
    assert leakage[0] > 2 * bound and leakage[-5:].mean() <= 1.25 * bound


def test_every_constraint_is_on_by_default_logged_and_can_be_turned_off(trained, screen):
    model, _ = trained
    for name in ("leakage", "dependence", "background_shift"):
        assert {f"{name}_train", f"{name}_multiplier", f"{name}_bound"} <= set(model.history)
        np.testing.assert_allclose(
            _history(model, f"{name}_bound"), DEFAULT_BOUNDS[name], rtol=1e-6
        )
    free = fit(screen, max_epochs=1, dependence_bound=None, background_shift_bound=None)
    assert "dependence_multiplier" not in free.history
    assert "background_shift_multiplier" not in free.history
    assert "dependence_train" in free.history  # measured, not constrained


def test_background_shift_bound_is_logged(screen):
    model = fit(screen, max_epochs=3, background_shift_bound=0.05)
    np.testing.assert_allclose(_history(model, "background_shift_bound"), 0.05, rtol=1e-6)


def test_without_the_bound_controls_keep_more_salient_signal(screen):
    # About 700 steps: a multiplier needs some 150 to rise from its floor.
    bounded = fit(screen.copy(), max_epochs=60, batch_size=16)
    free = fit(screen.copy(), max_epochs=60, batch_size=16, leakage_bound=None)
    assert "leakage_multiplier" not in free.history
    # Means of the last ten epochs: a single small-screen epoch is noisy. The multiplier
    # reaches about 3 by the end, so the bound (0.02) is not yet met; across seeds 0, 1, 2
    # free / bounded measured 1.73, 1.62 and 2.26 (1.56 to 2.33 before the per-perturbation
    # background shift), so the margin is 1.4.
    ended_bounded = _history(bounded, "leakage_train")[-10:].mean()
    assert _history(free, "leakage_train")[-10:].mean() > 1.4 * ended_bounded


@pytest.mark.parametrize("batch_size", [16, 64])
def test_the_dual_step_is_per_epoch_whatever_the_batch_size(screen, batch_size):
    # A bound no minibatch meets: every step's violation is clipped at 1, so after three
    # epochs the multiplier is e^(3 * multiplier_lr) above its floor at any batch size.
    model = fit(
        screen.copy(),
        max_epochs=3,
        batch_size=batch_size,
        leakage_bound=1e-7,
        multiplier_lr=2.0,
        dependence_bound=None,
        background_shift_bound=None,
    )
    ended = model.constraint_state_["multipliers"][CONSTRAINTS.LEAKAGE]
    assert ended == pytest.approx(MIN_MULTIPLIER * math.exp(3 * 2.0), rel=1e-4)


def test_multipliers_are_carried_into_the_next_train_call_and_through_save(screen, tmp_path):
    # A fast dual step, so that six epochs take the multipliers well off their floor.
    model = fit(screen, max_epochs=6, multiplier_lr=2.0)
    model.save(tmp_path / "model", save_anndata=False)
    loaded = compvi.ComparativeVI.load(tmp_path / "model", adata=screen)
    assert loaded.constraint_state_ == model.constraint_state_
    first = {
        name: _history(model, f"{name}_multiplier")[-1]
        for name in ("leakage", "dependence", "background_shift")
    }
    # The background shift has one multiplier per condition code; history logs the largest.
    ended = {name: np.max(v) for name, v in model.constraint_state_["multipliers"].items()}
    assert set(ended) == set(first)
    assert len(model.constraint_state_["multipliers"]["background_shift"]) == len(
        screen.obs["condition"].cat.categories
    )
    assert max(ended.values()) > 10 * MIN_MULTIPLIER
    # The loaded model's one-epoch fit starts where the first fit ended, not at the floor
    # (its epoch is the history's last row, whether or not the history kept the first fit).
    loaded.train(max_epochs=1, enable_progress_bar=False, batch_size=64)
    for name, value in ended.items():
        if value > 10 * MIN_MULTIPLIER:
            assert _history(loaded, f"{name}_multiplier")[-1] > 0.5 * value


def test_a_constraint_left_off_for_one_fit_keeps_its_multipliers_for_the_next(screen):
    model = fit(screen, max_epochs=3, multiplier_lr=2.0)
    before = model.constraint_state_["multipliers"]
    model.train(
        max_epochs=1, batch_size=64, enable_progress_bar=False, background_shift_bound=None
    )
    after = model.constraint_state_["multipliers"]
    assert after["background_shift"] == before["background_shift"]
    # The constraints that were on moved on from where they stood.
    assert after["leakage"] != before["leakage"]


def test_the_ceiling_warning_names_no_control_or_unmeasured_group(screen):
    # Every multiplier starts at the ceiling; the bound holds, so the measured ones fall,
    # and the controls', never measured, stays there.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fit(
            screen,
            max_epochs=1,
            background_shift_bound=1e3,
            plan_kwargs={"multipliers": {"background_shift": MAX_MULTIPLIER}},
        )
    ended = model.constraint_state_["multipliers"]["background_shift"]
    ended = dict(zip(model.conditions, ended, strict=True))
    assert ended.pop("control") == pytest.approx(MAX_MULTIPLIER)
    assert max(ended.values()) < MAX_MULTIPLIER
    assert not [w for w in caught if "background_shift of" in str(w.message)]


def test_a_violated_constraint_is_named_in_a_warning(screen):
    with pytest.warns(UserWarning, match=r"leakage = .* > leakage_bound = 1e-06"):
        fit(screen, max_epochs=1, leakage_bound=1e-6)


def test_background_shift_has_a_multiplier_per_perturbation_and_names_those_at_the_ceiling(
    screen,
):
    # An unreachable bound and a dual step of e^10 an epoch: two epochs reach the ceiling.
    with pytest.warns(UserWarning, match=r"background_shift of P1, P2, P3 \(their multipliers"):
        model = fit(screen, max_epochs=2, background_shift_bound=1e-9, multiplier_lr=10.0)
    ended = model.constraint_state_["multipliers"]["background_shift"]
    multipliers = dict(zip(model.conditions, ended, strict=True))
    # The controls are never measured: their multiplier stays at the floor.
    assert multipliers.pop("control") == pytest.approx(MIN_MULTIPLIER)
    assert set(multipliers) == {"P1", "P2", "P3"}
    assert min(multipliers.values()) == pytest.approx(MAX_MULTIPLIER)
    # The history logs the largest multiplier (the controls' stays at the floor).
    assert _history(model, "background_shift_multiplier")[-1] > 1.0


def test_a_single_background_shift_multiplier_from_an_earlier_version_starts_every_group(
    screen,
):
    model = fit(screen, max_epochs=1)
    # The previous version saved one number for the background shift, not one per condition.
    model.constraint_state_["multipliers"]["background_shift"] = 0.5
    model.train(max_epochs=1, batch_size=64, enable_progress_bar=False)
    ended = model.constraint_state_["multipliers"]["background_shift"]
    assert len(ended) == len(model.conditions)
    # Every perturbation started at 0.5 and moved by at most e^0.25 in the epoch; the
    # controls, never measured, kept it.
    for condition, value in zip(model.conditions, ended, strict=True):
        if condition == "control":
            assert value == pytest.approx(0.5)
        else:
            assert 0.5 * math.exp(-0.25) * 0.999 <= value <= 0.5 * math.exp(0.25) * 1.001


@pytest.mark.parametrize("prior", ["normal", "conditional"])
def test_kl_warmup_defaults_to_half_of_the_epochs(screen, prior):
    model = fit(screen, max_epochs=6, model={"prior": prior})
    kl_weight = model.history["kl_weight"].to_numpy(dtype=float).ravel()
    # scvi-tools' weight at epoch e is e / warm-up epochs, capped at 1.
    np.testing.assert_allclose(kl_weight, np.minimum(np.arange(6) / 3, 1.0), rtol=1e-5)
    assert default_kl_warmup_epochs(100) == 50 and default_kl_warmup_epochs(1) == 1
    overridden = fit(screen, max_epochs=2, plan_kwargs={"n_epochs_kl_warmup": 1})
    overridden_weight = overridden.history["kl_weight"].to_numpy(dtype=float).ravel()
    np.testing.assert_allclose(overridden_weight, [0, 1])


def test_fixed_weight_mode_and_argument_errors(screen):
    # Without a bound, the fixed weight alone pulls controls' salient codes in.
    free = fit(screen.copy(), max_epochs=3, leakage_bound=None)
    weighted = fit(screen.copy(), max_epochs=3, leakage_bound=None, leakage_weight=1e4)
    assert "leakage_multiplier" not in weighted.history
    assert _history(weighted, "leakage_train")[-1] < 0.75 * _history(free, "leakage_train")[-1]
    with pytest.raises(ValueError, match=r"either leakage_bound .* or leakage_weight"):
        fit(screen.copy(), max_epochs=1, leakage_weight=1.0)
    with pytest.raises(ValueError, match="leakage_bound must be > 0"):
        fit(screen.copy(), max_epochs=1, leakage_bound=-0.1)
    with pytest.raises(ValueError, match="dependence_bound must be > 0"):
        fit(screen.copy(), max_epochs=1, dependence_bound=0.0)
    with pytest.raises(ValueError, match="background_shift_bound must be > 0"):
        fit(screen.copy(), max_epochs=1, background_shift_bound=-0.1)
    with pytest.raises(ValueError, match="multiplier_lr must be > 0"):
        fit(screen.copy(), max_epochs=1, multiplier_lr=0)
    with pytest.raises(ValueError, match="balancing='pcgrad'"):
        fit(screen.copy(), max_epochs=1, balancing="pcgrad")


def test_sum_balancing_is_the_default_and_logs_one_half(screen):
    model = fit(screen, max_epochs=2)
    np.testing.assert_allclose(_history(model, "mgda_weight"), 0.5)


def test_plan_mgda_weight_equals_min_norm_of_per_objective_gradients(screen):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control"
    )
    model = compvi.ComparativeVI(screen, n_hidden=16, dropout_rate=0.0)
    plan = ComparativeTrainingPlan(model.module, balancing="mgda")
    splitter = model._data_splitter_cls(
        model.adata_manager,
        np.flatnonzero(~model._is_perturbed(model.adata_manager)),
        np.flatnonzero(model._is_perturbed(model.adata_manager)),
        batch_size=32,
    )
    splitter.setup()
    shared = model.module.shared_parameters()
    salient_head = {id(p) for p in model.module.encoder.salient.parameters()}
    # The decoder and the encoder's trunk are shared, the salient head is not.
    assert {id(p) for p in model.module.decoder.parameters()} <= {id(p) for p in shared}
    assert {id(p) for p in model.module.encoder.trunk.parameters()} <= {id(p) for p in shared}
    assert not salient_head & {id(p) for p in shared}
    alphas, running = [], None
    for batch in splitter.train_dataloader():
        tensors = concatenate_sources(batch)
        _, _, loss_output = model.module(tensors)
        alpha = plan._mgda_weight(loss_output)
        grads = []
        for key in ("loss_control", "loss_perturbed"):
            parts = torch.autograd.grad(
                loss_output.extra_metrics[key], shared, retain_graph=True, allow_unused=True
            )
            grads.append(
                torch.cat(
                    [
                        (torch.zeros_like(p) if g is None else g).reshape(-1)
                        for g, p in zip(parts, shared, strict=True)
                    ]
                )
            )
        g1, g2 = grads
        products = torch.stack([g1 @ g1, g2 @ g2, g1 @ g2])
        # The weight reads running means of the inner products (the first step's alone).
        running = products if running is None else 0.9 * running + 0.1 * products
        expected = torch.clamp(
            (running[1] - running[2]) / (running[0] + running[1] - 2 * running[2]), 0, 1
        )
        torch.testing.assert_close(alpha, expected)
        alphas.append(alpha.item())
    assert len(alphas) > 2  # enough steps for the running means to matter
    # Some minibatch must leave the clipped corners, or the comparison would be trivial.
    assert any(0 < alpha < 1 for alpha in alphas)


def test_non_finite_loss_stops_training_naming_the_term(screen):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control"
    )
    model = compvi.ComparativeVI(screen, n_hidden=16)
    with torch.no_grad():
        model.module.px_r.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="reconstruction_loss of control cells = nan"):
        model.train(max_epochs=1, enable_progress_bar=False)


@pytest.mark.parametrize(
    "options",
    [
        {"gene_likelihood": "zinb"},
        {"gene_likelihood": "poisson"},
        {"use_observed_lib_size": False},
    ],
)
def test_likelihoods_and_latent_library_train(screen, options):
    model = fit(screen, max_epochs=3, model=options, setup={"batch_key": "batch"})
    curve = _history(model, "loss_perturbed_train")
    assert np.isfinite(curve).all() and curve[-1] < curve[0]
    assert np.isfinite(model.get_latent_representation()).all()


# --------------------------------------------------------------- covariates
def _encode(module, tensors):
    outputs = module.inference(**module._get_inference_input(tensors))
    generative = module.generative(**module._get_generative_input(tensors, outputs))
    return outputs["qz"].loc, outputs["qs"].loc, generative["px_scale"]


@pytest.mark.parametrize(
    ("setup", "key", "change"),
    [
        ({"batch_key": "batch"}, REGISTRY_KEYS.BATCH_KEY, lambda t: 1 - t),
        (
            {"categorical_covariate_keys": ["donor"]},
            REGISTRY_KEYS.CAT_COVS_KEY,
            lambda t: (t + 1) % 3,
        ),
        (
            {"continuous_covariate_keys": ["percent_mito"]},
            REGISTRY_KEYS.CONT_COVS_KEY,
            lambda t: t + 5.0,
        ),
    ],
)
def test_every_registered_covariate_reaches_encoder_and_decoder(screen, setup, key, change):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control", **setup
    )
    model = compvi.ComparativeVI(screen, n_hidden=16)
    model.module.eval()
    tensors = next(iter(model._make_data_loader(screen, indices=np.arange(32))))
    changed = {**tensors, key: change(tensors[key])}
    with torch.no_grad():
        original, altered = _encode(model.module, tensors), _encode(model.module, changed)
    for before, after in zip(original, altered, strict=True):
        assert (before - after).abs().max() > 1e-4


def test_size_factors_set_the_library(screen):
    screen.obs["sf"] = np.linspace(0.5, 2.0, screen.n_obs)
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control", size_factor_key="sf"
    )
    model = compvi.ComparativeVI(screen, n_hidden=16)
    tensors = next(iter(model._make_data_loader(screen, indices=np.arange(10))))
    outputs = model.module.inference(**model.module._get_inference_input(tensors))
    np.testing.assert_allclose(
        outputs["library"].numpy().ravel(), np.log(screen.obs["sf"].to_numpy()[:10]), rtol=1e-6
    )


# --------------------------------------------------------- persistence, seed
def test_save_load_round_trip_gives_identical_latents(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "model", save_anndata=False)
    loaded = compvi.ComparativeVI.load(tmp_path / "model", adata=adata)
    for kind in ("salient", "background"):
        np.testing.assert_array_equal(
            loaded.get_latent_representation(representation_kind=kind),
            model.get_latent_representation(representation_kind=kind),
        )
    assert loaded.control_categories == ["control"]


def test_loading_onto_other_genes_raises(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "model", save_anndata=False)
    # (The same genes in another order load: tests/test_reliability.py.)
    fewer = adata[:, 3:].copy()
    with pytest.raises(ValueError, match=r"3 missing \(e.g. \['gene_0', 'gene_1', 'gene_2'\]\)"):
        compvi.ComparativeVI.load(tmp_path / "model", adata=fewer)


def test_seeded_runs_are_reproducible(screen):
    latents = []
    for _ in range(2):
        scvi.settings.seed = 7
        latents.append(fit(screen.copy(), max_epochs=3).get_latent_representation())
    np.testing.assert_array_equal(*latents)


@pytest.mark.slow
def test_training_recovers_both_blocks_better_than_an_untrained_model():
    adata = simulate_screen(n_cells=1500, n_genes=100, seed=3)
    compvi.ComparativeVI.setup_anndata(
        adata, condition_key="condition", control_category="control"
    )
    model = compvi.ComparativeVI(adata, n_background_latent=4, n_salient_latent=4)
    perturbed = (adata.obs["condition"] != "control").to_numpy()

    def scores():
        salient = model.get_latent_representation()
        background = model.get_latent_representation(representation_kind="background")
        return (
            affine_r2(adata.obsm["true_background"], background),
            affine_r2(adata.obsm["true_salient"][perturbed], salient[perturbed]),
        )

    untrained = scores()
    model.train(max_epochs=80, enable_progress_bar=False)
    trained_scores = scores()
    assert trained_scores[0] > untrained[0] + 0.3 and trained_scores[0] > 0.7
    assert trained_scores[1] > untrained[1] + 0.3 and trained_scores[1] > 0.7
