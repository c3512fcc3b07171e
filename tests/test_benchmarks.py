"""The benchmarks' quick tiers run end to end (their numbers are checked by reading them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
pytestmark = pytest.mark.slow


def _run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_identifiability_smoke_tier_reports_every_method(tmp_path):
    out = _run(str(BENCHMARKS / "identifiability.py"), "--tier", "smoke", "--out", str(tmp_path))
    for method in ("ComparativeVI", "ContrastiveVI", "PCA"):
        assert method in out
    runs = pd.read_csv(tmp_path / "identifiability_runs.csv")
    assert set(runs["method"]) == {"ComparativeVI", "ContrastiveVI", "PCA"}
    report = (tmp_path / "identifiability.md").read_text()
    assert "## Targets" in report and "paired" in report
    # The report's table summarizes the runs written beside it.
    for (_, method), scores in runs.groupby(["config", "method"])["background R²"]:
        assert scores.notna().all(), method
        sd = 0.0 if len(scores) == 1 else scores.std()
        assert f"{scores.mean():.3f} ± {sd:.3f}" in report, method


def test_identifiability_priors_smoke_tier_scores_graphs_and_components(tmp_path):
    args = ["--tier", "priors-smoke", "--out", str(tmp_path)]
    out = _run(str(BENCHMARKS / "identifiability.py"), *args)
    assert "Matched prior minus the others" in out
    runs = pd.read_csv(tmp_path / "identifiability_runs.csv")
    methods = runs.groupby("config")["method"].agg(set).to_dict()
    assert methods == {
        "mixture_screen 4+4": {"ComparativeVI", "ContrastiveVI", "ComparativeVI mixture"},
        "sparse_screen 4+8 (surplus)": {
            "ComparativeVI",
            "ContrastiveVI",
            "ComparativeVI sparse",
            "ComparativeVI sparse, true edge bound",
        },
    }
    sparse = runs[runs["method"] == "ComparativeVI sparse"].iloc[0]
    for column in ("graph SHD", "surplus edges", "surplus variance share"):
        assert np.isfinite(sparse[column])
    # Graph scores belong to the sparse prior's runs, component scores to the mixture's.
    assert runs.loc[~runs["method"].str.contains("sparse"), "graph SHD"].isna().all()
    mixture = runs[runs["method"] == "ComparativeVI mixture"].iloc[0]
    assert np.isfinite(mixture["component ARI"])
    assert runs.loc[runs["method"] != "ComparativeVI mixture", "component ARI"].isna().all()
    report = (tmp_path / "identifiability.md").read_text()
    assert f"{sparse['graph SHD']:.3f}" in report or f"{sparse['graph SHD']:.1f}" in report
    assert "matched prior against prior='normal'" in report and "graph SHD" in report


def test_sparse_graph_benchmark_answers_the_papalexi_questions(tmp_path):
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (data / "papalexi2021_thp1_crispr.h5ad").exists():
        pytest.skip(f"the Papalexi screen is not in {data}")
    args = ["--seeds", "0", "1", "--epochs", "1", "--out", str(tmp_path)]
    out = _run(str(BENCHMARKS / "sparse_graph.py"), *args)
    assert "graph SHD between seeds" in out
    report = (tmp_path / "sparse_graph.md").read_text()
    for row in ("factors used by all 4 pathway knock-outs", "SMAD4 edges", "CD86 edges"):
        assert row in report
    assert (tmp_path / "sparse_graph.png").stat().st_size > 10_000


def test_speed_benchmark_runs_on_a_small_screen(tmp_path):
    _run(
        str(BENCHMARKS / "speed.py"),
        "--cells",
        "600",
        "--genes",
        "50",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--tag",
        "t",
    )
    report = (tmp_path / "speed_t.md").read_text()
    assert "training throughput ratio" in report
    assert (tmp_path / "speed_t.png").exists()


def test_large_data_benchmark_compares_backed_and_in_memory_runs(tmp_path):
    args = ["--cells", "500", "--genes", "40", "--steps", "20", "--pool", "300"]
    _run(str(BENCHMARKS / "large_data.py"), *args, "--out", str(tmp_path), "--tag", "t")
    report = (tmp_path / "large_data_t.md").read_text()
    for ratio in ("ComparativeVI: backed / memory", "backed: ComparativeVI / ContrastiveVI"):
        assert ratio in report
    assert (tmp_path / "large_data_t.png").exists()


def test_large_data_screens_repeat_the_pool_with_new_cell_names(tmp_path):
    import anndata as ad

    sys.path.insert(0, str(BENCHMARKS))
    from large_data import write_screen

    write_screen(tmp_path / "s.h5ad", n_cells=250, n_genes=20, pool=100)
    adata = ad.read_h5ad(tmp_path / "s.h5ad")
    assert adata.shape == (250, 20) and adata.obs_names.is_unique
    counts = adata.X.toarray()
    # cells 100-199 and 200-249 repeat cells 0-99 and 0-49
    assert (counts[100:200] == counts[:100]).all() and (counts[200:] == counts[:50]).all()
    assert (
        adata.obs["condition"].to_numpy()[200:] == adata.obs["condition"].to_numpy()[:50]
    ).all()


def test_real_data_salient_rank_counts_the_directions_that_hold_the_variance():
    sys.path.insert(0, str(BENCHMARKS))
    from real_data import ABLATIONS, ablation_slug, salient_rank

    rng = np.random.default_rng(0)
    one_axis = np.outer(rng.normal(size=500), [1.0, 2.0, 0.0]) + 1e-3 * rng.normal(size=(500, 3))
    assert salient_rank(one_axis) == 1
    assert salient_rank(rng.normal(size=(500, 3))) == 3
    assert ablation_slug("ComparativeVI no leakage bound") == "no-leakage-bound"
    assert len({ablation_slug(name) for name in ABLATIONS}) == len(ABLATIONS)
