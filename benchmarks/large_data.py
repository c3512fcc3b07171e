"""Out-of-core training and inference: peak memory and throughput, backed vs in memory.

Run from the repository root:

    python benchmarks/large_data.py                  # 10k, 100k, 1M cells x 2,000 genes
    python benchmarks/large_data.py --cells 2000 4000 --genes 100 --steps 30 --out /tmp/ld

Each screen is written as an .h5ad with sparse CSR counts, then every (model, mode, size)
runs in its own process, so that its peak resident memory (``VmHWM``) is its own:

- ``backed``: ``anndata.read_h5ad(path, backed="r")``; the counts stay on disk.
- ``memory``: ``anndata.read_h5ad(path)``; the whole sparse matrix is loaded.

A run registers the data (ComparativeVI checks every count, a block of rows at a time),
trains ``--steps`` steps of ``--batch-size`` control + ``--batch-size`` perturbed cells
(throughput over the steps after the first 10%, which pay for start-up), then embeds every
cell (``get_latent_representation``, 1,024 cells per minibatch). ContrastiveVI
(``scvi.external.ContrastiveVI``) runs the same steps and the same inference on the same
files. Screens larger than ``--pool`` cells repeat a simulated screen of ``--pool`` cells
(with new cell names): the memory and the speed of reading do not depend on the cells being
distinct, and simulating a million distinct cells would itself need more memory than the
runs being measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from speed import _current_rss_mib, _device, _peak_rss_mib

RESULTS = Path(__file__).parent / "results"
MODELS = ("ComparativeVI", "ContrastiveVI")
MODES = ("backed", "memory")


def write_screen(path: Path, n_cells: int, n_genes: int, pool: int) -> None:
    """Write a simulated screen of ``n_cells`` cells to ``path``, a pool at a time."""
    import h5py
    import numpy as np
    from anndata.io import sparse_dataset, write_elem
    from scipy import sparse

    from compvi.data import simulate_screen

    screen = simulate_screen(
        n_cells=min(pool, n_cells), n_genes=n_genes, mean_library_size=1000.0, seed=0
    )
    counts = sparse.csr_matrix(screen.X, dtype=np.float32)
    repeats = -(-n_cells // screen.n_obs)
    rows = np.arange(n_cells) % screen.n_obs
    obs = screen.obs.iloc[rows].copy()
    obs.index = [f"cell_{i}" for i in range(n_cells)]
    with h5py.File(path, "w") as file:
        write_elem(file, "obs", obs)
        write_elem(file, "var", screen.var)
        write_elem(file, "uns", {})
        write_elem(file, "X", counts[: min(n_cells, screen.n_obs)])
        matrix = sparse_dataset(file["X"])
        for repeat in range(1, repeats):
            matrix.append(counts[: min(screen.n_obs, n_cells - repeat * screen.n_obs)])


def _worker(path: str, model_name: str, mode: str, steps: int, batch_size: int) -> dict:
    """Load, register, train and embed once; report timings and peak memory."""
    import anndata as ad
    import numpy as np
    import scvi
    from lightning.pytorch.callbacks import Callback

    import compvi

    class StepTimer(Callback):
        """Time the steps after the first 10%, and sample the resident memory."""

        def __init__(self) -> None:
            self.start, self.timed_steps, self.rss = None, 0, []

        def on_train_batch_start(self, trainer, plan, batch, batch_idx) -> None:
            if trainer.global_step == steps // 10:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, plan, outputs, batch, batch_idx) -> None:
            if self.start is not None:
                self.timed_steps += 1
                self.seconds = time.perf_counter() - self.start
            if batch_idx % 20 == 0:
                self.rss.append(_current_rss_mib())

    start = time.perf_counter()
    adata = ad.read_h5ad(path, backed="r" if mode == "backed" else None)
    load_seconds = time.perf_counter() - start
    rss_loaded = _current_rss_mib()
    scvi.settings.seed = 0
    control = (adata.obs["condition"] == "control").to_numpy()
    timer = StepTimer()
    fit_kwargs = {
        "max_epochs": 10_000,
        "max_steps": steps,
        "batch_size": batch_size,
        "train_size": 1.0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [timer],
    }
    start = time.perf_counter()
    if model_name == "ComparativeVI":
        compvi.ComparativeVI.setup_anndata(
            adata, condition_key="condition", control_category="control"
        )
        model = compvi.ComparativeVI(adata)
        setup_seconds = time.perf_counter() - start
        model.train(**fit_kwargs)
    else:
        from scvi.external import ContrastiveVI

        ContrastiveVI.setup_anndata(adata)
        model = ContrastiveVI(adata)
        setup_seconds = time.perf_counter() - start
        model.train(
            background_indices=np.flatnonzero(control).tolist(),
            target_indices=np.flatnonzero(~control).tolist(),
            **fit_kwargs,
        )
    start = time.perf_counter()
    latent = model.get_latent_representation(batch_size=1024)
    inference_seconds = time.perf_counter() - start
    assert latent.shape[0] == adata.n_obs and np.isfinite(latent).all()
    return {
        "load_s": load_seconds,
        "setup_s": setup_seconds,
        "train_cells_per_s": timer.timed_steps * 2 * batch_size / timer.seconds,
        "infer_cells_per_s": adata.n_obs / inference_seconds,
        "loaded_rss_mib": rss_loaded,
        "peak_rss_mib": _peak_rss_mib(),
    }


def _ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Backed / in-memory for each model, and ComparativeVI / ContrastiveVI for each mode."""
    wide = table.set_index(["cells", "model", "mode"])
    rows = []
    for cells in table["cells"].unique():
        for model_name in table["model"].unique():
            backed, memory = (wide.loc[(cells, model_name, mode)] for mode in MODES)
            rows.append(
                {
                    "cells": cells,
                    "ratio": f"{model_name}: backed / memory",
                    "peak memory": backed["peak_rss_mib"] / memory["peak_rss_mib"],
                    "training throughput": backed["train_cells_per_s"]
                    / memory["train_cells_per_s"],
                    "inference throughput": backed["infer_cells_per_s"]
                    / memory["infer_cells_per_s"],
                }
            )
        for mode in MODES:
            ours, theirs = (wide.loc[(cells, model_name, mode)] for model_name in MODELS)
            rows.append(
                {
                    "cells": cells,
                    "ratio": f"{mode}: ComparativeVI / ContrastiveVI",
                    "peak memory": ours["peak_rss_mib"] / theirs["peak_rss_mib"],
                    "training throughput": ours["train_cells_per_s"] / theirs["train_cells_per_s"],
                    "inference throughput": ours["infer_cells_per_s"]
                    / theirs["infer_cells_per_s"],
                }
            )
    return pd.DataFrame(rows)


def _plot(table: pd.DataFrame, path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (model_name, mode), group in table.groupby(["model", "mode"]):
        style = {"marker": "o", "linestyle": "-" if mode == "backed" else "--"}
        label = f"{model_name}, {mode}"
        axes[0].plot(group["cells"], group["peak_rss_mib"] / 1024, label=label, **style)
        axes[1].plot(group["cells"], group["train_cells_per_s"], label=label, **style)
    axes[0].set(xscale="log", xlabel="cells", ylabel="peak resident memory (GiB)")
    axes[1].set(xscale="log", xlabel="cells", ylabel="training throughput (cells/s)")
    axes[0].legend(fontsize=8)
    fig.suptitle(device, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    """Write the screens, run every (size, model, mode) in its own process, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pool", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="cpu", help="suffix of the result files")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        path, model_name, mode, steps, batch_size = args.worker
        print(json.dumps(_worker(path, model_name, mode, int(steps), int(batch_size))))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_cells in args.cells:
            path = Path(tmp) / f"screen_{n_cells}.h5ad"
            write_screen(path, n_cells, args.genes, args.pool)
            file_mib = path.stat().st_size / 2**20
            for model_name in MODELS:
                for mode in MODES:
                    command = [sys.executable, __file__, "--worker", str(path), model_name]
                    command += [mode, str(args.steps), str(args.batch_size)]
                    result = subprocess.run(command, capture_output=True, text=True, check=False)
                    if result.returncode != 0:
                        sys.exit(
                            f"{model_name} ({mode}) on {n_cells} cells failed:\n"
                            f"{result.stderr[-3000:]}"
                        )
                    row = {"cells": n_cells, "model": model_name, "mode": mode}
                    row |= {"file_mib": file_mib}
                    row |= json.loads(result.stdout.strip().splitlines()[-1])
                    rows.append(row)
                    print(row, flush=True)
            path.unlink()
    table = pd.DataFrame(rows)
    ratios = _ratios(table)
    device = _device()
    print(f"\n{device}\n{table.round(2).to_string(index=False)}\n\n{ratios.round(3).to_string()}")

    args.out.mkdir(parents=True, exist_ok=True)
    _plot(table, args.out / f"large_data_{args.tag}.png", device)
    command = " ".join(sys.argv[1:])
    (args.out / f"large_data_{args.tag}.md").write_text(
        f"# Large data: backed vs in-memory AnnData ({args.tag})\n\n"
        f"Command: `python benchmarks/large_data.py {command}`\n\n"
        f"Device: {device}. {args.genes} genes, sparse CSR counts in an .h5ad; "
        f"{args.steps} training steps of {args.batch_size} control + {args.batch_size} "
        f"perturbed cells; inference embeds every cell. Screens above {args.pool} cells "
        "repeat a simulated screen of that many cells.\n\n"
        f"{table.round(2).to_markdown(index=False)}\n\n"
        "`peak_rss_mib`: the process's peak resident memory (data, model and outputs); "
        "`loaded_rss_mib`: resident memory once the AnnData is opened; `setup_s`: "
        "registration and model construction; `file_mib`: the .h5ad on disk.\n\n"
        "Ratios (above 1: more memory, or faster):\n\n"
        f"{ratios.round(3).to_markdown(index=False)}\n\n![large data](large_data_{args.tag}.png)\n"
    )


if __name__ == "__main__":
    main()
