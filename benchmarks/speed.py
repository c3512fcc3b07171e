"""Training and inference throughput and peak memory: ComparativeVI vs ContrastiveVI.

Run from the repository root:

    python benchmarks/speed.py                       # 5k, 20k, 100k cells x 2,000 genes
    python benchmarks/speed.py --cells 2000 --epochs 1 --out /tmp/speed   # a quick look
    python benchmarks/speed.py --cells 100000 1000000 --batch-size 128 1024 --steps 300 \
        --pool 50000 --accelerator gpu --out OUT --tag gpu     # the GPU run (gpu_speed.sh)

Every model trains on the same sparse CSR counts; ComparativeVI runs at its defaults (its
three constraints on). Three runs per size:

- ``ComparativeVI``: the default data path (``data_path="auto"``: the registered data held
  on the training device and minibatches gathered there when they fit; the ``data_path``
  column says which path ran);
- ``ComparativeVI (loader)``: ``data_path="loader"``, the host loader, for training and
  inference (the path of earlier releases);
- ``ContrastiveVI`` (``scvi.external.ContrastiveVI``) at its defaults, 128 + 128 cells per
  step whatever ``--batch-size`` says (``--contrastive-batch-size``).

Each (model, size, batch size) runs in its own process so that peak memory is its own.
Throughput counts the cells of both groups (a step of ``b`` + ``b`` cells processes
``2 b``): over the last epoch (the first pays for start-up), or with ``--steps`` over that
many steps after ``--warmup-steps``. Inference embeds every cell, 1,024 per minibatch.
Ratios are ComparativeVI / ContrastiveVI from the same run. Screens above ``--pool`` cells
repeat a simulated screen of ``--pool`` cells (``benchmarks/large_data.py``).
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
OURS, OURS_LOADER, THEIRS = "ComparativeVI", "ComparativeVI (loader)", "ContrastiveVI"
MODELS = (OURS, OURS_LOADER, THEIRS)
INFERENCE_BATCH = 1024


def _worker(
    path: str,
    model_name: str,
    epochs: int,
    batch_size: int,
    steps: int,
    warmup_steps: int,
    accelerator: str,
) -> dict:
    """Train one model on the saved screen and report timings and peak memory."""
    import functools
    import logging

    import anndata as ad
    import numpy as np
    import scvi
    import torch
    from lightning.pytorch.callbacks import Callback

    import compvi

    cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    class Timer(Callback):
        """Times the last epoch, or the steps after the warm-up, and samples the memory."""

        def __init__(self) -> None:
            self.seconds, self.rss, self.batches = [], [], 0
            self.first_step_at = None

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if not steps:
                synchronize()
                self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.batches += 1
            if self.first_step_at is None:
                synchronize()
                self.first_step_at = time.perf_counter()
            if steps and self.batches in (warmup_steps, warmup_steps + steps):
                synchronize()
                self.seconds.append(time.perf_counter())
            if batch_idx % 20 == 0:
                self.rss.append(_current_rss_mib())

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if not steps:
                synchronize()
                self.seconds.append(time.perf_counter() - self._start)

        def cells_per_s(self, cells_per_step: int, steps_per_epoch: int) -> tuple[float, float]:
            """Training throughput and the seconds it was measured over."""
            if steps:
                seconds = self.seconds[1] - self.seconds[0]
                return steps * cells_per_step / seconds, seconds
            return steps_per_epoch * cells_per_step / self.seconds[-1], self.seconds[-1]

    class Messages(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.lines = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    messages = Messages()
    logging.getLogger("compvi").addHandler(messages)
    logging.getLogger("compvi").setLevel(logging.INFO)

    adata = ad.read_h5ad(path)
    rss_before = _current_rss_mib()
    scvi.settings.seed = 0
    control = (adata.obs["condition"] == "control").to_numpy()
    timer = Timer()
    length = {"max_epochs": 10_000, "max_steps": warmup_steps + steps} if steps else {}
    fit_kwargs = {
        "max_epochs": epochs,
        "batch_size": batch_size,
        "train_size": 1.0,
        "accelerator": accelerator,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [timer],
        **length,
    }
    start = time.perf_counter()
    if model_name in (OURS, OURS_LOADER):
        data_path = "loader" if model_name == OURS_LOADER else "auto"
        compvi.ComparativeVI.setup_anndata(
            adata, condition_key="condition", control_category="control"
        )
        model = compvi.ComparativeVI(adata)
        start = time.perf_counter()
        model.train(datasplitter_kwargs={"data_path": data_path}, **fit_kwargs)
        # Inference on the same path as training (the benchmark's own switch: users get
        # data_path="auto" everywhere).
        model._make_data_loader = functools.partial(model._make_data_loader, data_path=data_path)
    else:
        from scvi.external import ContrastiveVI

        ContrastiveVI.setup_anndata(adata)
        model = ContrastiveVI(adata)
        start = time.perf_counter()
        model.train(
            background_indices=np.flatnonzero(control).tolist(),
            target_indices=np.flatnonzero(~control).tolist(),
            **fit_kwargs,
        )
    steps_per_epoch = int(np.ceil(max(control.sum(), (~control).sum()) / batch_size))
    train_cells_per_s, timed_seconds = timer.cells_per_s(2 * batch_size, steps_per_epoch)
    peak_gpu_train = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    synchronize()
    start_inference = time.perf_counter()
    latent = model.get_latent_representation(batch_size=INFERENCE_BATCH)
    synchronize()
    inference_seconds = time.perf_counter() - start_inference
    assert latent.shape[0] == adata.n_obs and np.isfinite(latent).all()
    paths = [line.split(":")[1].strip() for line in messages.lines if "data path" in line]
    return {
        "data_path": paths[0] if paths else "",
        "first_step_s": timer.first_step_at - start,
        "timed_s": timed_seconds,
        "train_cells_per_s": train_cells_per_s,
        "infer_cells_per_s": adata.n_obs / inference_seconds,
        "training_rss_mib": max(timer.rss) - rss_before,
        "peak_rss_mib": _peak_rss_mib(),
        "peak_gpu_train_mib": peak_gpu_train,
        "peak_gpu_infer_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
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


def _ratios(table: pd.DataFrame) -> pd.DataFrame:
    """ComparativeVI (each path) / ContrastiveVI, per size and batch size, and default / loader.

    ContrastiveVI runs at one batch size per size: every ComparativeVI row is compared with
    it, whatever its own batch size.
    """
    rows = []
    for (cells, batch_size), group in table.groupby(["cells", "batch_size"]):
        runs = group.set_index("model")
        theirs = table[(table["cells"] == cells) & (table["model"] == THEIRS)]
        row = {"cells": cells, "batch_size": batch_size}
        if OURS in runs.index and len(theirs):
            ours, theirs = runs.loc[OURS], theirs.iloc[0]
            row["training throughput ratio"] = (
                ours["train_cells_per_s"] / theirs["train_cells_per_s"]
            )
            row["inference throughput ratio"] = (
                ours["infer_cells_per_s"] / theirs["infer_cells_per_s"]
            )
            row["training memory ratio"] = ours["training_rss_mib"] / theirs["training_rss_mib"]
            if OURS_LOADER in runs.index:
                row["loader: training throughput ratio"] = (
                    runs.loc[OURS_LOADER, "train_cells_per_s"] / theirs["train_cells_per_s"]
                )
        if OURS in runs.index and OURS_LOADER in runs.index:
            for kind in ("train", "infer"):
                column = f"{kind}_cells_per_s"
                row[f"default / loader: {kind}"] = (
                    runs.loc[OURS, column] / runs.loc[OURS_LOADER, column]
                )
        if len(row) > 2:
            rows.append(row)
    return pd.DataFrame(rows)


def _runs(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(model, batch size) pairs to run at each size."""
    loader_sizes = args.loader_batch_size or args.batch_size
    runs = [(OURS, size) for size in args.batch_size if OURS in args.models]
    runs += [(OURS_LOADER, size) for size in loader_sizes if OURS_LOADER in args.models]
    if THEIRS in args.models:
        runs.append((THEIRS, args.contrastive_batch_size or args.batch_size[0]))
    return runs


def main() -> None:
    """Simulate each screen, run every (model, batch size) in its own process, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[5_000, 20_000, 100_000])
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, default=0, help="time this many steps (0: the last epoch)"
    )
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[128])
    parser.add_argument(
        "--loader-batch-size",
        type=int,
        nargs="+",
        help="batch sizes of the host-loader runs (default: --batch-size)",
    )
    parser.add_argument(
        "--contrastive-batch-size",
        type=int,
        default=128,
        help="ContrastiveVI's cells per group per step (its default: 128)",
    )
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--pool", type=int, default=0, help="repeat a screen of this many cells (0: simulate all)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="cpu", help="suffix of the result files")
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        path, model_name, *numbers, accelerator = args.worker
        print(json.dumps(_worker(path, model_name, *map(int, numbers), accelerator)))
        return

    from compvi.data import simulate_screen

    args.out.mkdir(parents=True, exist_ok=True)
    # Each run's row as soon as it is measured: a run cut short still leaves its rows.
    partial = args.out / f"speed_{args.tag}_rows.jsonl"
    partial.write_text("")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_cells in args.cells:
            path = Path(tmp) / f"screen_{n_cells}.h5ad"
            if args.pool and n_cells > args.pool:
                from large_data import write_screen

                write_screen(path, n_cells, args.genes, args.pool)
            else:
                simulate_screen(n_cells=n_cells, n_genes=args.genes, seed=0).write_h5ad(path)
            for model_name, batch_size in _runs(args):
                numbers = (args.epochs, batch_size, args.steps, args.warmup_steps)
                command = [sys.executable, __file__, "--worker", str(path), model_name]
                command += [*map(str, numbers), args.accelerator]
                result = subprocess.run(command, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    sys.exit(f"{model_name} on {n_cells} cells failed:\n{result.stderr[-3000:]}")
                row = {"cells": n_cells, "model": model_name, "batch_size": batch_size}
                row |= json.loads(result.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(row, flush=True)
                with partial.open("a") as file:
                    file.write(json.dumps(row) + "\n")
            path.unlink()
    table = pd.DataFrame(rows)
    if table["peak_gpu_train_mib"].isna().all():
        table = table.drop(columns=["peak_gpu_train_mib", "peak_gpu_infer_mib"])
    ratios = _ratios(table)
    device = _device()
    print(f"\n{device}\n{table.round(2).to_string(index=False)}\n\n{ratios.round(3).to_string()}")

    _plot(table, args.out / f"speed_{args.tag}.png", device)
    command = " ".join(sys.argv[1:])
    measured = (
        f"{args.steps} steps after {args.warmup_steps} warm-up steps"
        if args.steps
        else f"epoch {args.epochs}"
    )
    (args.out / f"speed_{args.tag}.md").write_text(
        f"# Speed: ComparativeVI vs ContrastiveVI ({args.tag})\n\n"
        f"Command: `python benchmarks/speed.py {command}`\n\n"
        f"Device: {device}. {args.genes} genes, sparse CSR; `batch_size` control + "
        f"`batch_size` perturbed cells per step; throughput over {measured}, counting both "
        f"groups; inference embeds every cell, {INFERENCE_BATCH} per minibatch. "
        "`ComparativeVI` runs its default data path (`data_path` column: `device` = data "
        "held on the training device, minibatches gathered there); `ComparativeVI (loader)` "
        "the host loader.\n\n"
        f"{table.round(2).to_markdown(index=False)}\n\n"
        "`training_rss_mib`: resident memory added between loading the data and the peak "
        "sampled during training; `peak_rss_mib`: the process's peak, data included; "
        "`peak_gpu_*_mib`: `torch.cuda.max_memory_allocated` during training, then during "
        "inference; `first_step_s`: from `train()` to the end of the first step (setup, "
        "data held on the device).\n\n"
        "Ratios (ComparativeVI / ContrastiveVI at its defaults; above 1 is faster, or more "
        "memory):\n\n"
        f"{ratios.round(3).to_markdown(index=False)}\n\n![speed](speed_{args.tag}.png)\n"
    )
    # The full table is written: the rows kept against an interrupted run are not needed.
    partial.unlink()


def _plot(table: pd.DataFrame, path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    memory = "peak_gpu_train_mib" if "peak_gpu_train_mib" in table else "training_rss_mib"
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for (model_name, batch_size), group in table.groupby(["model", "batch_size"]):
        label = f"{model_name}, {batch_size} + {batch_size}"
        style = {"marker": "o", "linestyle": "--" if "loader" in model_name else "-"}
        axes[0].plot(group["cells"], group["train_cells_per_s"], label=label, **style)
        axes[1].plot(group["cells"], group["infer_cells_per_s"], label=label, **style)
        axes[2].plot(group["cells"], group[memory], label=label, **style)
    axes[0].set(xscale="log", yscale="log", xlabel="cells", ylabel="training cells / s")
    axes[1].set(xscale="log", yscale="log", xlabel="cells", ylabel="inference cells / s")
    axes[2].set(
        xscale="log",
        xlabel="cells",
        ylabel="peak GPU memory, training (MiB)"
        if memory == "peak_gpu_train_mib"
        else "memory added by training (MiB)",
    )
    axes[0].legend(fontsize=7)
    fig.suptitle(device, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
