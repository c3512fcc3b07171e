from __future__ import annotations

import anndata as ad
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
    assert adata.obsm["X_umap_salient"].shape == (400, 2)
    assert (out / "salient_umap.png").stat().st_size > 10_000
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
