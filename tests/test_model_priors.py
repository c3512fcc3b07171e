"""ComparativeVI with each salient prior: training, outputs, constraints and persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from conftest import fit

import compvi
from compvi.data import simulate_screen


@pytest.mark.parametrize("prior", ["mixture", "conditional", "sparse"])
def test_each_prior_trains_with_mgda_and_the_constraints(screen, prior):
    model = fit(screen, model={"prior": prior, "n_prior_components": 3}, max_epochs=2)
    history = model.history
    for key in ("mgda_weight", "leakage_multiplier", "dependence_multiplier", "kl_local_train"):
        assert key in history, key
    assert ("edges_multiplier" in history) == (prior == "sparse")
    assert np.isfinite(history["elbo_train"].to_numpy(dtype=float)).all()
    assert f"prior={prior!r}" in model._model_summary_string


def test_bad_prior_arguments_raise(screen):
    compvi.ComparativeVI.setup_anndata(
        screen, condition_key="condition", control_category="control"
    )
    with pytest.raises(ValueError, match="prior='student' is not one of"):
        compvi.ComparativeVI(screen, prior="student")
    with pytest.raises(ValueError, match="n_prior_components must be a positive integer"):
        compvi.ComparativeVI(screen, prior="mixture", n_prior_components=0)
    with pytest.raises(ValueError, match="n_prior_components >= 2"):
        compvi.ComparativeVI(screen, prior="mixture", n_prior_components=1)
    with pytest.raises(ValueError, match="mask_temperature must be > 0"):
        compvi.ComparativeVI(screen, prior="sparse", mask_temperature=0)


def test_outputs_of_a_prior_the_model_lacks_name_the_prior_needed(screen):
    model = fit(screen, max_epochs=1)
    with pytest.raises(ValueError, match=r"needs a learned prior .* prior='normal'"):
        model.get_prior_parameters()
    with pytest.raises(ValueError, match="needs a model created with prior='sparse'"):
        model.get_perturbation_graph()
    with pytest.raises(ValueError, match="needs a model created with prior='mixture'"):
        model.get_component_responsibilities()


def test_edge_bound_needs_the_sparse_prior(screen):
    from compvi.train._training_plan import ComparativeTrainingPlan

    model = fit(screen, max_epochs=1)
    with pytest.raises(ValueError, match="'normal'; create the model with prior='sparse'"):
        ComparativeTrainingPlan(model.module, edge_bound=1.0)
    # Through train() the bound is ignored for other priors, as documented.
    model.train(max_epochs=1, edge_bound=1.0, enable_progress_bar=False)
    assert "edges_multiplier" not in model.history


def test_mixture_outputs(screen):
    model = fit(screen, model={"prior": "mixture", "n_prior_components": 3}, max_epochs=2)
    table = model.get_prior_parameters()
    assert list(table.index) == ["component_0", "component_1", "component_2"]
    assert list(table.columns[:3]) == ["weight", "mean_s1", "mean_s2"]
    assert table["weight"].sum() == pytest.approx(1.0)
    assert (table.filter(like="scale_") > 0).all().all()
    responsibilities = model.get_component_responsibilities(indices=[0, 5, 7])
    assert list(responsibilities.index) == list(screen.obs_names[[0, 5, 7]])
    np.testing.assert_allclose(responsibilities.sum(1), 1.0, rtol=1e-5)
    # They are the prior's Bayes rule applied to the salient posterior means.
    salient = model.get_latent_representation(indices=[0, 5, 7])
    prior = model.module.salient_prior
    expected = prior.responsibilities(torch.as_tensor(salient)).detach().numpy()
    np.testing.assert_allclose(responsibilities.to_numpy(), expected, rtol=1e-5)


def test_conditional_parameters_follow_each_perturbations_salient_embedding():
    scvi.settings.seed = 0
    adata = simulate_screen(n_cells=600, n_genes=60, seed=2)
    model = fit(adata, model={"prior": "conditional"}, max_epochs=40, plan_kwargs={"lr": 3e-3})
    table = model.get_prior_parameters()
    assert list(table.index) == ["P1", "P2", "P3"]
    salient = model.get_latent_representation()
    conditions = adata.obs["condition"].to_numpy()
    embedded = np.stack([salient[conditions == p].mean(0) for p in table.index])
    learned = table.filter(like="mean_").to_numpy()
    # The prior means track where each perturbation's cells sit in the salient space.
    assert np.corrcoef(embedded.ravel(), learned.ravel())[0, 1] > 0.8


def test_graph_is_a_perturbation_by_factor_table_of_probabilities(screen):
    model = fit(screen, model={"prior": "sparse"}, max_epochs=2)
    graph = model.get_perturbation_graph()
    assert isinstance(graph, pd.DataFrame)
    assert list(graph.index) == ["P1", "P2", "P3"]
    assert list(graph.columns) == ["s1", "s2", "s3", "s4"]
    logits = model.module.salient_prior.edge_logits.detach()[1:]
    np.testing.assert_allclose(graph.to_numpy(), torch.sigmoid(logits).numpy(), rtol=1e-6)
    # Laws under the hard graph: no edge, mean 0.
    table = model.get_prior_parameters()
    means = table.filter(like="mean_").to_numpy()
    assert (means[graph.to_numpy() <= 0.5] == 0).all()


def test_tighter_edge_bound_gives_a_sparser_graph():
    adata = simulate_screen(n_cells=600, n_genes=60, seed=2)
    edges = {}
    for bound in (0.5, None):
        scvi.settings.seed = 0
        model = fit(
            adata.copy(),
            model={"prior": "sparse"},
            max_epochs=30,
            # A dual step of e^1 an epoch (the default is e^0.25): 30 epochs are short for a
            # multiplier to rise from its floor to where it holds the bound.
            batch_size=16,
            multiplier_lr=1.0,
            edge_bound=bound,
            plan_kwargs={"edge_anneal_fraction": 0.3},
        )
        edges[bound] = model.get_perturbation_graph().sum(1).mean()
        if bound is not None:
            multiplier = model.history["edges_multiplier"].to_numpy(dtype=float).ravel()
            assert multiplier.max() > 0
            assert model.history["edges_bound"].iloc[-1, 0] == pytest.approx(0.5)
    # The bound holds (up to the last steps' slack) and binds: without it the graph is denser.
    assert edges[0.5] < 0.75
    assert edges[None] > edges[0.5] + 0.5


def test_edge_bound_anneals_from_the_number_of_factors(screen):
    model = fit(
        screen,
        model={"prior": "sparse"},
        max_epochs=4,
        edge_bound=1.0,
        plan_kwargs={"edge_anneal_fraction": 0.5},
    )
    bounds = model.history["edges_bound"].to_numpy(dtype=float).ravel()
    np.testing.assert_allclose(bounds, [4.0, 2.5, 1.0, 1.0])


def test_prior_parameters_have_their_own_learning_rate(screen):
    from compvi.train._training_plan import ComparativeTrainingPlan

    model = fit(screen, model={"prior": "conditional"}, max_epochs=1)

    plan = ComparativeTrainingPlan(model.module, prior_lr=0.5)
    optimizer = plan.configure_optimizers()["optimizer"]
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == [1e-3, 0.5]
    prior_ids = {id(p) for p in model.module.salient_prior.parameters()}
    assert {id(p) for p in groups[1]["params"]} == prior_ids
    assert not prior_ids & {id(p) for p in groups[0]["params"]}
    with pytest.raises(ValueError, match="prior_lr must be > 0"):
        ComparativeTrainingPlan(model.module, prior_lr=0.0)


@pytest.mark.parametrize("prior", ["mixture", "sparse"])
def test_prior_survives_save_and_load(screen, prior, tmp_path):
    model = fit(screen, model={"prior": prior, "n_prior_components": 3}, max_epochs=2)
    model.save(tmp_path / "model")
    loaded = compvi.ComparativeVI.load(tmp_path / "model", adata=screen)
    assert loaded.module.prior == prior
    pd.testing.assert_frame_equal(loaded.get_prior_parameters(), model.get_prior_parameters())
    if prior == "sparse":
        pd.testing.assert_frame_equal(
            loaded.get_perturbation_graph(), model.get_perturbation_graph()
        )


def test_unseen_conditions_raise_a_clear_error_and_the_fallback_embeds_them(screen):
    model = fit(screen, model={"prior": "conditional"}, max_epochs=1)
    new = screen.copy()
    new.obs["condition"] = new.obs["condition"].cat.rename_categories({"P3": "NEW_KO"})
    with pytest.raises(ValueError, match=r"conditions the model was not trained on: \['NEW_KO'\]"):
        model.get_latent_representation(new)
    assert list(new.obs["condition"].cat.categories) == ["control", "P1", "P2", "NEW_KO"]
    # The documented fallback: any trained perturbation label gives the same embedding.
    relabelled = new.copy()
    relabelled.obs["condition"] = pd.Categorical(
        relabelled.obs["condition"].astype(str).replace("NEW_KO", "P1")
    )
    np.testing.assert_allclose(
        model.get_latent_representation(relabelled), model.get_latent_representation(screen)
    )
