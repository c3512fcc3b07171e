"""Training and inference throughput and peak memory: ComparativeVI vs ContrastiveVI.

Run from the repository root:

    python benchmarks/speed.py                       # 5k, 20k, 100k cells x 2,000 genes
    python benchmarks/speed.py --cells 2000 --epochs 1 --out /tmp/speed   # a quick look

Both models train on the same sparse CSR counts with 128 control + 128 perturbed cells per
step; ComparativeVI runs with every feature on (MGDA balancing and the leakage bound). Each
(model, size) pair runs in its own process so that peak memory is its own. Throughput is
measured over the last epoch (the first pays for start-up), in cells per second, where a
step processes 256 cells; ratios are ComparativeVI / ContrastiveVI from the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
MODELS = ("ComparativeVI", "ContrastiveVI")


def _worker(path: str, model_name: str, epochs: int, batch_size: int) -> dict:
    """Train one model on the saved screen and report timings and peak memory."""
    import anndata as ad
    import numpy as np
    import scvi
    import torch
    from lightning.pytorch.callbacks import Callback

    import compvi

    class EpochTimer(Callback):
        """Times each epoch and samples the resident memory while training."""

        def __init__(self):
            self.seconds = []
            self.rss = []

        def on_train_epoch_start(self, trainer, pl_module):
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx % 20 == 0:
                self.rss.append(_current_rss_mib())

        def on_train_epoch_end(self, trainer, pl_module):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self._start)

    adata = ad.read_h5ad(path)
    rss_before = _current_rss_mib()
    scvi.settings.seed = 0
    control = (adata.obs["condition"] == "control").to_numpy()
    timer = EpochTimer()
    quiet = {"enable_progress_bar": False, "enable_model_summary": False, "callbacks": [timer]}
    if model_name == "ComparativeVI":
        compvi.ComparativeVI.setup_anndata(
            adata, condition_key="condition", control_category="control"
        )
        model = compvi.ComparativeVI(adata)
        model.train(max_epochs=epochs, batch_size=batch_size, train_size=1.0, **quiet)
        infer = model.get_latent_representation
    else:
        from scvi.external import ContrastiveVI

        ContrastiveVI.setup_anndata(adata)
        model = ContrastiveVI(adata)
        model.train(
            background_indices=np.flatnonzero(control).tolist(),
            target_indices=np.flatnonzero(~control).tolist(),
            max_epochs=epochs,
            batch_size=batch_size,
            train_size=1.0,
            **quiet,
        )
        infer = model.get_latent_representation
    steps = int(np.ceil(max(control.sum(), (~control).sum()) / batch_size))
    start = time.perf_counter()
    infer(batch_size=1024)
    inference_seconds = time.perf_counter() - start
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "epoch_seconds": timer.seconds[-1],
        "train_cells_per_s": steps * 2 * batch_size / timer.seconds[-1],
        "infer_cells_per_s": adata.n_obs / inference_seconds,
        "training_rss_mib": max(timer.rss) - rss_before,
        "peak_rss_mib": _peak_rss_mib(),
        "peak_gpu_mib": peak_gpu,
    }


def _current_rss_mib() -> float:
    """Resident memory of this process now (Linux), in MiB."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * resource.getpagesize() / 2**20


def _peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux ``VmHWM``), in MiB.

    Not ``getrusage``'s ``ru_maxrss``, which a process started by another inherits across
    exec: a worker would report the parent's peak when that is larger.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line; this benchmark needs Linux.")


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"CPU, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[5_000, 20_000, 100_000])
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="cpu", help="suffix of the result files")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        path, model_name, epochs, batch_size = args.worker
        print(json.dumps(_worker(path, model_name, int(epochs), int(batch_size))))
        return

    from compvi.data import simulate_screen

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_cells in args.cells:
            path = Path(tmp) / f"screen_{n_cells}.h5ad"
            simulate_screen(n_cells=n_cells, n_genes=args.genes, seed=0).write_h5ad(path)
            for model_name in MODELS:
                command = [
                    sys.executable,
                    __file__,
                    "--worker",
                    str(path),
                    model_name,
                    str(args.epochs),
                    str(args.batch_size),
                ]
                result = subprocess.run(command, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    sys.exit(f"{model_name} on {n_cells} cells failed:\n{result.stderr[-3000:]}")
                row = {"cells": n_cells, "model": model_name}
                row |= json.loads(result.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(row, flush=True)
    table = pd.DataFrame(rows)
    wide = table.pivot(index="cells", columns="model")
    ratios = pd.DataFrame(
        {
            "training throughput ratio": wide["train_cells_per_s"]["ComparativeVI"]
            / wide["train_cells_per_s"]["ContrastiveVI"],
            "inference throughput ratio": wide["infer_cells_per_s"]["ComparativeVI"]
            / wide["infer_cells_per_s"]["ContrastiveVI"],
            "training memory ratio": wide["training_rss_mib"]["ComparativeVI"]
            / wide["training_rss_mib"]["ContrastiveVI"],
        }
    )
    device = _device()
    print(f"\n{device}\n{table.round(2).to_string(index=False)}\n\n{ratios.round(3).to_string()}")

    args.out.mkdir(parents=True, exist_ok=True)
    _plot(table, args.out / f"speed_{args.tag}.png", device)
    command = " ".join(sys.argv[1:])
    (args.out / f"speed_{args.tag}.md").write_text(
        f"# Speed: ComparativeVI vs ContrastiveVI ({args.tag})\n\n"
        f"Command: `python benchmarks/speed.py {command}`\n\n"
        f"Device: {device}. {args.genes} genes, sparse CSR, {args.batch_size} control + "
        f"{args.batch_size} perturbed cells per step, throughput over epoch {args.epochs}.\n\n"
        f"{table.round(2).to_markdown(index=False)}\n\n"
        "`training_rss_mib`: resident memory added between loading the data and the peak "
        "sampled during training; `peak_rss_mib`: the process's peak, data included.\n\n"
        "Ratios (ComparativeVI / ContrastiveVI; above 1 is faster, or more memory):\n\n"
        f"{ratios.round(3).to_markdown()}\n\n![speed](speed_{args.tag}.png)\n"
    )


def _plot(table: pd.DataFrame, path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for model_name, group in table.groupby("model"):
        axes[0].plot(group["cells"], group["epoch_seconds"], marker="o", label=model_name)
        axes[1].plot(group["cells"], group["training_rss_mib"], marker="o", label=model_name)
    axes[0].set(xscale="log", yscale="log", xlabel="cells", ylabel="seconds per epoch")
    axes[1].set(xscale="log", xlabel="cells", ylabel="memory added by training (MiB)")
    axes[0].legend()
    fig.suptitle(device, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
