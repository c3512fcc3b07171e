from __future__ import annotations

import functools
import os
from importlib.metadata import version
from pathlib import Path

import anndata as ad
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

import compvi
from compvi.cli import _staging, main
from compvi.cli._options import command_line_message, default_max_epochs, kl_warmup_epochs


def _files(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones included) with its bytes (None: a folder)."""
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def _one_line_error(err: str, command: str = "fit") -> str:
    # Warnings before the error (scvi-tools' own about the same input, say) are lines of
    # their own, marked as such.
    warning = f"compvi {command}: warning: "
    lines = [line for line in err.strip().splitlines() if not line.startswith(warning)]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"compvi {command}: "), err
    return lines[0]


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    ("message", "expected", "gone"),
    [
        (
            "It looks log-normalized. Register the raw counts with "
            "ComparativeVI.setup_anndata(adata, layer='counts', ...).",
            "Register the raw counts with --layer counts.",
            "setup_anndata",
        ),
        (
            "condition_key='perturbation' is not a column of adata.obs (columns: ['a']).",
            "--condition-key perturbation is not a column",
            "condition_key",
        ),
        (
            "layer='raw' is not in adata.layers (available: []). Pass layer=None to use adata.X.",
            "--layer raw is not in adata.layers (available: []). Leave out --layer to use "
            "adata.X.",
            "layer=",
        ),
        (
            "adata.obs['b'] (batch_key) has 3 missing values",
            "adata.obs['b'] (--batch-key) has 3 missing values",
            "batch_key",
        ),
        (
            "control_category ['NT'] not found in adata.obs['condition']",
            "--control ['NT'] not found",
            "control_category",
        ),
        (
            "the loss is not finite.\nLower the learning rate with plan_kwargs={'lr': ...}.",
            "the loss is not finite. Lower the learning rate with --lr.",
            "plan_kwargs",
        ),
        (
            "leakage_bound must be >= 0, got -1; use leakage_bound=None to turn it off.",
            "--leakage-bound must be >= 0, got -1; use --leakage-bound none to turn it off.",
            "None",
        ),
        (
            "n_cells must be a positive integer, got -5.",
            "--n-cells must be a positive integer",
            "n_cells",
        ),
    ],
)
def test_messages_are_rewritten_for_the_command_line(message, expected, gone):
    rewritten = command_line_message(message)
    assert expected in rewritten
    assert gone not in rewritten
    assert "\n" not in rewritten


def test_the_default_epochs_and_kl_warm_up():
    # scvi-tools' heuristic, which train() applies to max_epochs=None.
    from scvi.model._utils import get_max_epochs_heuristic

    for n_cells in (300, 20_000, 45_000, 200_000, 10_000_000):
        assert default_max_epochs(n_cells) == get_max_epochs_heuristic(n_cells)
    # The warm-up takes half the epochs, so the KL weight is 1 for the second half.
    assert kl_warmup_epochs(1000, None) == 500
    assert kl_warmup_epochs(400, None) == 200
    assert kl_warmup_epochs(40, None) == 20
    assert kl_warmup_epochs(1, None) == 1
    assert kl_warmup_epochs(3, None) == 2
    assert kl_warmup_epochs(40, 7) == 7


# --------------------------------------------------------------------------- version, usage


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"compvi {version('compvi')}"
    assert compvi.__version__ == version("compvi")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["fly"], "invalid choice"),
        (["demo", "--n-cells", "-5"], "--n-cells: must be a positive integer"),
        (["demo", "--max-epochs", "0"], "--max-epochs: must be a positive integer"),
        (["demo", "--devices", "two"], "--devices"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(argv, fragment, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "demo")] if argv[0] == "demo" else argv) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and fragment in error and error.startswith("compvi")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- demo


def test_demo_writes_embeddings_plot_model_and_recovery_table(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        ["demo", "--out", str(out), "--n-cells", "400", "--n-genes", "40", "--max-epochs", "3"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "background affine R²" in printed and "salient MCC" in printed
    assert "KL weight rises to 1 over the first 2" in printed
    adata = ad.read_h5ad(out / "screen.h5ad")
    assert adata.obsm["X_compvi_salient"].shape == (400, 4)
    assert adata.obsm["X_compvi_background"].shape == (400, 4)
    assert adata.obsm["X_compvi_salient_umap"].shape == (400, 2)
    assert adata.obsm["X_compvi_background_umap"].shape == (400, 2)
    # Controls, and only controls, are classed "control"; every perturbed cell is scored.
    is_control = (adata.obs["condition"] == "control").to_numpy()
    classes = adata.obs["compvi_class"].astype(str).to_numpy()
    assert (classes[is_control] == "control").all()
    assert set(classes[~is_control]) <= {"responder", "escaper"}
    assert (out / "embeddings.png").stat().st_size > 10_000
    assert (out / "model" / "model.pt").exists()
    table = pd.read_csv(out / "recovery.csv", index_col=0)
    assert table.shape == (5, 2)
    # The table scores the written embeddings against the simulation's true latents.
    assert table.loc["background affine R²", "ComparativeVI"] == pytest.approx(
        compvi.metrics.affine_r2(adata.obsm["true_background"], adata.obsm["X_compvi_background"]),
        abs=1e-6,
    )
    perturbed = (adata.obsm["true_salient"] != 0).any(axis=1)
    assert table.loc["salient MCC (perturbed cells)", "ComparativeVI"] == pytest.approx(
        compvi.metrics.mcc(
            adata.obsm["true_salient"][perturbed], adata.obsm["X_compvi_salient"][perturbed]
        ),
        abs=1e-6,
    )
    # Nothing but the demo folder: the staging folder is gone.
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_demo_refuses_an_existing_folder_without_force(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compvi.ComparativeVI, "train", _must_not_train)
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = _files(tmp_path)
    assert main(["demo", "--out", str(out)]) == 2
    assert "--force" in _one_line_error(capsys.readouterr().err, "demo")
    # --force replaces only an earlier demo, never a folder of other files.
    assert main(["demo", "--out", str(out), "--force"]) == 2
    assert "no earlier demo" in _one_line_error(capsys.readouterr().err, "demo")
    assert _files(tmp_path) == before


# --------------------------------------------------------------------------- fit


@functools.wraps(compvi.ComparativeVI.train)  # the command line reads train()'s defaults
def _must_not_train(*args, **kwargs):
    pytest.fail("the error should have been caught before training")


@pytest.fixture
def screen_file(tmp_path):
    from compvi.data import simulate_screen

    adata = simulate_screen(n_cells=300, n_genes=40, n_batches=2, seed=5)
    rng = np.random.default_rng(0)
    adata.obs["donor"] = rng.choice(["d1", "d2", "d3"], adata.n_obs)
    adata.obs["percent_mito"] = rng.uniform(0, 10, adata.n_obs)
    adata.layers["counts"] = adata.X.copy()
    folder = tmp_path / "input"
    folder.mkdir()
    path = folder / "screen.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture
def out_dir(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    return folder


def _fit_argv(screen_file, out, *extra):
    return [
        "fit",
        str(screen_file),
        "--condition-key",
        "condition",
        "--control",
        "control",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture
def recorded_train(monkeypatch):
    """Record the keyword arguments train() receives, then train as asked."""
    calls = []
    original = compvi.ComparativeVI.train

    @functools.wraps(original)
    def train(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(compvi.ComparativeVI, "train", train)
    return calls


def test_fit_writes_every_output_with_the_chosen_options(
    screen_file, out_dir, capsys, recorded_train
):
    out, model_dir = out_dir / "fitted.h5ad", out_dir / "model"
    argv = _fit_argv(
        screen_file,
        out,
        "--batch-key",
        "batch",
        "--layer",
        "counts",
        "--categorical-covariate",
        "donor",
        "--continuous-covariate",
        "percent_mito",
        "--n-background-latent",
        "3",
        "--n-salient-latent",
        "2",
        "--n-hidden",
        "16",
        "--gene-likelihood",
        "zinb",
        "--library-size",
        "latent",
        "--prior",
        "mixture",
        "--n-prior-components",
        "3",
        "--max-epochs",
        "2",
        "--kl-warmup-epochs",
        "5",
        "--batch-size",
        "32",
        "--lr",
        "0.002",
        "--leakage-bound",
        "0.1",
        "--dependence-bound",
        "none",
        "--background-shift-bound",
        "0.3",
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--seed",
        "3",
        "--de-samples",
        "200",
        "--model-dir",
        str(model_dir),
    )
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Training 2 epochs (--max-epochs)" in printed
    assert "over the first 5, so it ends at 0.40" in printed
    assert "Wrote 300 cells" in printed

    (kwargs,) = recorded_train
    assert kwargs["max_epochs"] == 2 and kwargs["batch_size"] == 32
    assert kwargs["plan_kwargs"] == {"lr": 0.002, "n_epochs_kl_warmup": 5}
    assert kwargs["leakage_bound"] == 0.1 and kwargs["dependence_bound"] is None
    assert kwargs["background_shift_bound"] == 0.3
    assert kwargs["accelerator"] == "cpu" and kwargs["devices"] == 1

    stem = out_dir / "fitted"
    expected = {
        "fitted.h5ad",
        "fitted_perturbations.csv",
        "fitted_de.csv",
        "fitted_umap.png",
        "fitted_clustermap.png",
        "fitted_training.png",
        "model",
    }
    assert {p.name for p in out_dir.iterdir()} == expected  # no staging folder left
    fitted = ad.read_h5ad(out)
    assert fitted.obsm["X_compvi_salient"].shape == (300, 2)
    assert fitted.obsm["X_compvi_background"].shape == (300, 3)
    assert fitted.obsm["X_compvi_salient_umap"].shape == (300, 2)
    norms = np.linalg.norm(fitted.obsm["X_compvi_salient"], axis=1)
    np.testing.assert_allclose(fitted.obs["compvi_salient_norm"], norms, rtol=1e-5)
    control = (fitted.obs["condition"] == "control").to_numpy()
    assert (fitted.obs["compvi_class"][control] == "control").all()
    assert fitted.obs["compvi_responder_probability"][~control].between(0, 1).all()

    summary = pd.read_csv(f"{stem}_perturbations.csv", index_col="perturbation")
    assert sorted(summary.index) == ["P1", "P2", "P3"]
    assert summary.loc["P1", "n_cells"] == (fitted.obs["condition"] == "P1").sum()
    pd.testing.assert_frame_equal(
        summary, fitted.uns["compvi"]["perturbations"], check_names=False, check_dtype=False
    )
    de = pd.read_csv(f"{stem}_de.csv", index_col="gene")
    assert sorted(de["group1"].unique()) == ["P1", "P2", "P3"]
    assert len(de) == 3 * 40 and de["proba_de"].between(0, 1).all()
    for figure in ("umap", "clustermap", "training"):
        assert Path(f"{stem}_{figure}.png").stat().st_size > 5_000

    loaded = compvi.ComparativeVI.load(model_dir, adata=fitted)
    assert loaded.module.prior == "mixture"
    assert loaded.module.gene_likelihood == "zinb"
    np.testing.assert_allclose(
        loaded.get_latent_representation(), fitted.obsm["X_compvi_salient"], rtol=1e-5
    )


def test_fit_chooses_and_reports_epochs_so_the_kl_warm_up_completes(
    screen_file, out_dir, capsys, monkeypatch
):
    calls = []

    @functools.wraps(compvi.ComparativeVI.train)
    def train(self, **kwargs):
        calls.append(kwargs)
        raise FloatingPointError("stopped by the test")

    monkeypatch.setattr(compvi.ComparativeVI, "train", train)
    assert main(_fit_argv(screen_file, out_dir / "o.h5ad")) == 2
    captured = capsys.readouterr()
    assert "Training 400 epochs (scvi-tools' default for 300 cells" in captured.out
    assert "the KL weight rises to 1 over the first 200" in captured.out
    assert calls[0]["max_epochs"] == 400
    assert calls[0]["plan_kwargs"]["n_epochs_kl_warmup"] == 200
    assert _one_line_error(captured.err) == "compvi fit: stopped by the test"
    assert _files(out_dir) == {}


def _log_normalized(path: Path) -> None:
    adata = ad.read_h5ad(path)
    adata.X = np.log1p(adata.X.toarray() / 7.0)
    adata.write_h5ad(path)


@pytest.mark.parametrize(
    ("extra", "fragments", "prepare"),
    [
        (["--condition-key", "perturbation"], ["--condition-key perturbation"], None),
        (["--control", "NT"], ["--control", "'NT'", "not found"], None),
        (["--batch-key", "lane"], ["--batch-key lane", "not a column"], None),
        (["--categorical-covariate", "lane"], ["--categorical-covariate lane"], None),
        (["--layer", "raw"], ["--layer raw", "Leave out --layer"], None),
        ([], ["log-normalized", "--layer counts"], _log_normalized),
        (["--rna-modality", "rna"], ["--rna-modality applies to .h5mu input only"], None),
        (["--prior", "flat"], ["--prior: invalid choice"], None),
        (["--leakage-bound", "-1"], ["--leakage-bound: must be a number >= 0 or 'none'"], None),
        (["--max-epochs", "-1"], ["--max-epochs: must be a positive integer"], None),
        (["--max-epochs", "1.5"], ["--max-epochs: must be a positive integer"], None),
        (["--dropout-rate", "1"], ["--dropout-rate"], None),
        (["--threshold", "nan"], ["--threshold"], None),
    ],
)
def test_fit_reports_bad_input_in_one_line_before_training_and_writes_nothing(
    screen_file, out_dir, capsys, monkeypatch, extra, fragments, prepare
):
    monkeypatch.setattr(compvi.ComparativeVI, "train", _must_not_train)
    if prepare is not None:
        prepare(screen_file)
    argv = _fit_argv(screen_file, out_dir / "fitted.h5ad", "--model-dir", out_dir / "m")
    # A later option replaces an earlier one, and --control appends: replace it instead.
    if extra[:1] == ["--control"]:
        argv[argv.index("--control") + 1] = extra[1]
        extra = []
    assert main([str(a) for a in [*argv, *extra]]) == 2
    error = _one_line_error(capsys.readouterr().err)
    for fragment in fragments:
        assert fragment in error
    for python_word in ("setup_anndata", "condition_key", "control_category", "layer="):
        assert python_word not in error
    assert _files(out_dir) == {}


def test_fit_reports_a_corrupt_or_missing_input_file(screen_file, out_dir, capsys, monkeypatch):
    monkeypatch.setattr(compvi.ComparativeVI, "train", _must_not_train)
    corrupt = screen_file.with_name("corrupt.h5ad")
    corrupt.write_bytes(screen_file.read_bytes()[:2000])
    assert main(_fit_argv(corrupt, out_dir / "o.h5ad")) == 2
    error = _one_line_error(capsys.readouterr().err)
    assert "cannot read" in error and "corrupt.h5ad" in error
    assert main(_fit_argv(screen_file.with_name("nope.h5ad"), out_dir / "o.h5ad")) == 2
    assert "does not exist" in _one_line_error(capsys.readouterr().err)
    assert _files(out_dir) == {}


def test_fit_checks_output_paths_before_training(screen_file, out_dir, capsys, monkeypatch):
    monkeypatch.setattr(compvi.ComparativeVI, "train", _must_not_train)

    def error_for(out, *extra):
        assert main(_fit_argv(screen_file, out, *map(str, extra))) == 2
        return _one_line_error(capsys.readouterr().err)

    assert "does not exist" in error_for(out_dir / "missing" / "o.h5ad")
    assert "does not exist" in error_for(out_dir / "o.h5ad", "--model-dir", out_dir / "x" / "m")
    (out_dir / "folder.h5ad").mkdir()
    assert "is a folder" in error_for(out_dir / "folder.h5ad")
    assert ".h5ad or .h5mu" in error_for(out_dir / "o.csv")
    assert "names the input file" in error_for(screen_file, "--force")
    (out_dir / "file").write_text("x")
    assert "is a file" in error_for(out_dir / "o.h5ad", "--model-dir", out_dir / "file")
    assert {p.name for p in out_dir.iterdir()} == {"folder.h5ad", "file"}


def test_fit_refuses_existing_outputs_without_force(screen_file, out_dir, capsys, monkeypatch):
    monkeypatch.setattr(compvi.ComparativeVI, "train", _must_not_train)
    out = out_dir / "fitted.h5ad"
    for existing in ("fitted_de.csv", "fitted_training.png"):
        (out_dir / existing).write_text("earlier run")
    (out_dir / "model").mkdir()
    (out_dir / "model" / "model.pt").write_text("earlier model")
    before = _files(out_dir)
    assert main(_fit_argv(screen_file, out, "--model-dir", str(out_dir / "model"))) == 2
    error = _one_line_error(capsys.readouterr().err)
    assert "3 output(s) exist" in error and "--force" in error
    assert _files(out_dir) == before
    # --force replaces a saved model, never another folder.
    (out_dir / "notes").mkdir()
    (out_dir / "notes" / "a.txt").write_text("mine")
    before = _files(out_dir)
    argv = _fit_argv(screen_file, out, "--model-dir", str(out_dir / "notes"), "--force")
    assert main(argv) == 2
    assert "no saved model" in _one_line_error(capsys.readouterr().err)
    assert _files(out_dir) == before


def test_a_nan_loss_ends_in_one_line_and_writes_nothing(screen_file, out_dir, capsys):
    # A learning rate of 1e30 sends the weights to infinity after the first step.
    argv = _fit_argv(
        screen_file,
        out_dir / "o.h5ad",
        "--max-epochs",
        "3",
        "--lr",
        "1e30",
        "--model-dir",
        str(out_dir / "model"),
        "--quiet",
    )
    assert main(argv) == 2
    captured = capsys.readouterr()
    error = _one_line_error(captured.err)
    assert "not finite" in error and "--lr" in error and "plan_kwargs" not in error
    assert captured.out == ""
    assert _files(out_dir) == {}


def test_running_out_of_memory_ends_in_one_line(screen_file, out_dir, capsys, monkeypatch):
    @functools.wraps(compvi.ComparativeVI.train)
    def train(self, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\n(details)")

    monkeypatch.setattr(compvi.ComparativeVI, "train", train)
    assert main(_fit_argv(screen_file, out_dir / "o.h5ad", "--quiet")) == 2
    error = _one_line_error(capsys.readouterr().err)
    assert "out of memory (CUDA out of memory. Tried to allocate 2.00 GiB (details))" in error
    assert "--batch-size" in error
    assert _files(out_dir) == {}


def test_an_unexpected_error_keeps_its_traceback(screen_file, out_dir, monkeypatch):
    @functools.wraps(compvi.ComparativeVI.train)
    def train(self, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(compvi.ComparativeVI, "train", train)
    with pytest.raises(RuntimeError, match="a bug"):
        main(_fit_argv(screen_file, out_dir / "o.h5ad", "--quiet"))
    assert _files(out_dir) == {}


def test_a_failure_while_writing_keeps_the_earlier_outputs(
    screen_file, out_dir, capsys, monkeypatch
):
    out, model_dir = out_dir / "fitted.h5ad", out_dir / "model"
    for name in ("fitted.h5ad", "fitted_perturbations.csv"):
        (out_dir / name).write_text("earlier run")
    model_dir.mkdir()
    (model_dir / "model.pt").write_text("earlier model")
    before = _files(out_dir)

    def save(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compvi.ComparativeVI, "save", save)
    argv = _fit_argv(
        screen_file,
        out,
        "--max-epochs",
        "1",
        "--no-de",
        "--no-figures",
        "--model-dir",
        str(model_dir),
        "--force",
        "--quiet",
    )
    assert main(argv) == 2
    assert "No space left on device" in _one_line_error(capsys.readouterr().err)
    assert _files(out_dir) == before


def test_a_failed_move_puts_every_earlier_output_back(tmp_path, monkeypatch):
    targets = {name: tmp_path / name for name in ("a.csv", "b.csv", "c.csv")}
    for name in ("a.csv", "b.csv"):
        targets[name].write_text(f"old {name}")
    moves = []
    real_replace = os.replace

    def replace(source, target):
        moves.append(target)
        if len(moves) == 4:  # old a aside, new a in, old b aside, then new b fails
            raise OSError("disk gone")
        real_replace(source, target)

    with _staging.StagedOutputs(targets) as staged:
        for name in targets:
            staged.path(name).write_text(f"new {name}")
        monkeypatch.setattr(_staging.os, "replace", replace)
        with pytest.raises(OSError, match="disk gone"):
            staged.commit()
        monkeypatch.setattr(_staging.os, "replace", real_replace)
    assert _files(tmp_path) == {"a.csv": b"old a.csv", "b.csv": b"old b.csv"}


def test_force_replaces_every_output_and_removes_stale_ones(screen_file, out_dir, capsys):
    out = out_dir / "fitted.h5ad"
    for name in ("fitted.h5ad", "fitted_de.csv", "fitted_umap.png"):
        (out_dir / name).write_text("earlier run")
    argv = _fit_argv(screen_file, out, "--max-epochs", "1", "--no-de", "--no-figures")
    assert main([*argv, "--force", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    # The DE table and figures of the earlier run would not match the new model: removed.
    assert {p.name for p in out_dir.iterdir()} == {"fitted.h5ad", "fitted_perturbations.csv"}
    assert ad.read_h5ad(out).obsm["X_compvi_salient"].shape == (300, 10)


def test_fit_reads_counts_from_disk_with_backed(screen_file, out_dir, recorded_train):
    out = out_dir / "fitted.h5ad"
    argv = _fit_argv(screen_file, out, "--backed", "--max-epochs", "1", "--no-de", "--quiet")
    assert main([*argv, "--no-figures"]) == 0
    assert recorded_train[0]["plan_kwargs"]["n_epochs_kl_warmup"] == 1
    fitted, original = ad.read_h5ad(out), ad.read_h5ad(screen_file)
    assert fitted.obsm["X_compvi_salient"].shape == (300, 10)
    assert (fitted.X != original.X).nnz == 0
    pd.testing.assert_index_equal(fitted.obs_names, original.obs_names)


def test_fit_reads_h5mu_with_the_rna_modality(screen_file, out_dir, capsys):
    import mudata

    rna = ad.read_h5ad(screen_file)
    guides = ad.AnnData(np.ones((rna.n_obs, 2), dtype=np.float32), obs=rna.obs[[]])
    path = screen_file.with_suffix(".h5mu")
    mudata.MuData({"gex": rna, "guides": guides}).write(path)

    def argv(out, modality="gex"):
        quick = ["--max-epochs", "1", "--no-de", "--no-figures", "--quiet"]
        return _fit_argv(path, out, "--rna-modality", modality, "--batch-key", "batch", *quick)

    # The condition and batch columns are in the RNA modality's obs only: read from there.
    assert main(argv(out_dir / "fitted.h5mu")) == 0
    fitted = mudata.read_h5mu(out_dir / "fitted.h5mu")
    assert fitted.obsm["X_compvi_salient"].shape == (rna.n_obs, 10)
    assert (
        fitted.obs["compvi_perturbation_score"].notna().sum()
        == (rna.obs["condition"] != "control").sum()
    )

    assert main(argv(out_dir / "x.h5ad")) == 2
    assert "must be an .h5mu file" in _one_line_error(capsys.readouterr().err)
    assert main(argv(out_dir / "y.h5mu", "protein")) == 2
    assert "'protein' is not a modality" in _one_line_error(capsys.readouterr().err)
    assert {p.name for p in out_dir.iterdir()} == {"fitted.h5mu", "fitted_perturbations.csv"}


def test_warnings_are_one_line_in_command_line_terms(tmp_path, out_dir, capsys):
    from compvi.data import simulate_screen

    adata = simulate_screen(n_cells=300, n_genes=40, seed=5)
    control = (adata.obs["condition"] == "control").to_numpy()
    adata.obs["sample"] = pd.Categorical(np.where(control, "ctrl_1", "pert_1"))
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    argv = _fit_argv(path, out_dir / "fit.h5ad", "--batch-key", "sample", "--max-epochs", "1")
    assert main([*argv, "--no-figures", "--no-de"]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("compvi fit: warning: ")]
    assert any("adata.obs['sample'] (--batch-key) separates control" in w for w in warned)
    assert ".py:" not in err  # no source location, as Python's default format adds


def test_color_adds_obs_columns_to_the_umaps_and_is_checked_before_training(
    screen_file, out_dir, capsys, monkeypatch
):
    out = out_dir / "fit.h5ad"
    argv = [*_fit_argv(screen_file, out, "--max-epochs", "1", "--no-de"), "--color", "donor"]
    assert main(argv) == 0
    figure = matplotlib.image.imread(out_dir / "fit_umap.png")
    # One row of two panels per colour: the condition's and the donor's.
    assert figure.shape[0] > 1.6 * figure.shape[1] / 2.5
    capsys.readouterr()
    monkeypatch.setattr(compvi.ComparativeVI, "train", _must_not_train)
    argv = [*_fit_argv(screen_file, out, "--force"), "--color", "cell_type"]
    assert main(argv) == 2
    assert _one_line_error(capsys.readouterr().err) == (
        "compvi fit: --color 'cell_type' is not a column of the input's obs."
    )
