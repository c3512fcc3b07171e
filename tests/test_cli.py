from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from compvi.__main__ import main


def test_demo_writes_embeddings_plot_model_and_recovery_table(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        ["demo", "--out", str(out), "--n-cells", "400", "--n-genes", "40", "--max-epochs", "3"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "background affine R²" in printed and "salient MCC" in printed
    adata = ad.read_h5ad(out / "screen.h5ad")
    assert adata.obsm["X_compvi_salient"].shape == (400, 4)
    assert adata.obsm["X_compvi_background"].shape == (400, 4)
    assert adata.obsm["X_compvi_salient_umap"].shape == (400, 2)
    assert adata.obsm["X_compvi_background_umap"].shape == (400, 2)
    assert set(adata.obs["compvi_class"].unique()) <= {"control", "responder", "escaper"}
    assert (out / "embeddings.png").stat().st_size > 10_000
    assert (out / "model" / "model.pt").exists()
    table = pd.read_csv(out / "recovery.csv", index_col=0)
    assert table.shape == (5, 2)
    assert table["ComparativeVI"].between(-1, 1).all()


def test_demo_reports_bad_arguments_in_one_line(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "x"), "--n-cells", "-5"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("compvi demo:") and "n_cells" in error and "\n" not in error


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit):
        main(["fly"])


@pytest.fixture
def screen_file(tmp_path):
    from compvi.data import simulate_screen

    path = tmp_path / "screen.h5ad"
    simulate_screen(n_cells=300, n_genes=40, n_batches=2, seed=5).write_h5ad(path)
    return path


def test_fit_writes_embeddings_and_a_loadable_model(screen_file, tmp_path, capsys):
    out, model_dir = tmp_path / "fitted.h5ad", tmp_path / "model"
    argv = [
        "fit",
        str(screen_file),
        "--condition-key",
        "condition",
        "--control",
        "control",
        "--batch-key",
        "batch",
        "--max-epochs",
        "2",
        "--out",
        str(out),
        "--model-dir",
        str(model_dir),
    ]
    assert main(argv) == 0
    assert "Wrote 300 cells" in capsys.readouterr().out
    fitted = ad.read_h5ad(out)
    assert fitted.obsm["X_compvi_salient"].shape == (300, 10)
    assert fitted.obsm["X_compvi_background"].shape == (300, 10)
    norms = np.linalg.norm(fitted.obsm["X_compvi_salient"], axis=1)
    np.testing.assert_allclose(fitted.obs["compvi_salient_norm"], norms, rtol=1e-5)
    control = (fitted.obs["condition"] == "control").to_numpy()
    assert (fitted.obs["compvi_class"][control] == "control").all()
    assert fitted.obs["compvi_responder_probability"][control].isna().all()
    assert fitted.obs["compvi_responder_probability"][~control].between(0, 1).all()
    summary = fitted.uns["compvi"]["perturbations"]
    assert sorted(summary.index) == ["P1", "P2", "P3"]
    assert summary.loc["P1", "n_cells"] == (fitted.obs["condition"] == "P1").sum()
    import compvi

    loaded = compvi.ComparativeVI.load(model_dir, adata=fitted)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), fitted.obsm["X_compvi_salient"], rtol=1e-5
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--condition-key", "perturbation", "--control", "control"], "condition_key="),
        (["--condition-key", "condition", "--control", "NT"], "not found"),
    ],
)
def test_fit_reports_bad_input_in_one_line_and_writes_nothing(
    screen_file, tmp_path, capsys, extra, message
):
    out = tmp_path / "fitted.h5ad"
    assert main(["fit", str(screen_file), *extra, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("compvi fit:") and message in error and "\n" not in error
    assert not out.exists() and not list(tmp_path.glob(".fitted*"))


def test_fit_reports_a_missing_input_file(tmp_path, capsys):
    argv = [
        "fit",
        str(tmp_path / "nope.h5ad"),
        "--condition-key",
        "c",
        "--control",
        "x",
        "--out",
        str(tmp_path / "o.h5ad"),
    ]
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
