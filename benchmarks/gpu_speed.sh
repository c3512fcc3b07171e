#!/usr/bin/env bash
# The GPU speed table (benchmarks/results/speed_gpu.md and its plot), in one run on the GPU machine.
#
# On the CPU machine, from the project root (again after any change to compvi: it packs compvi's wheel):
#     bash ../shared/device/fetch_newest_stack.sh
# Then on the GPU machine (the device tool's `run`, carry [".device-wheels"], timeout_s 540):
#     bash benchmarks/gpu_speed.sh "$OUT"
# and, back here, copy the two files into the repository:
#     cp <files_at>/speed_gpu.md <files_at>/speed_gpu.png benchmarks/results/
#
# What it does, in about 6 minutes on one H200 (budget: a machine's start plus this must fit in the
# session's 15 minutes of device time):
#   1. tests/test_device_data.py on CUDA (about 20 s): the device path equals the host loader, and
#      gathering a minibatch on the GPU makes no host-device synchronisation
#      (torch.cuda.set_sync_debug_mode("error")).
#   2. benchmarks/speed.py at 100k and 1M cells x 2,000 genes: ComparativeVI on its default path
#      (device-resident data) at 128, 1,024 and 4,096 control + perturbed cells per step, on the
#      host loader (the path of earlier releases) at 128 + 128, and ContrastiveVI at its defaults
#      (128 + 128), each in its own process, timed over STEPS steps after 20 warm-up steps, with
#      peak GPU memory; the screens repeat a simulated screen of 50,000 cells. Most of the time
#      goes to reading the 1M-cell .h5ad (4 GB) and checking its counts in each of 5 processes.
# Everything lands in the folder given (at most 8 files come back from the device machine):
#   speed_gpu.md, speed_gpu.png, speed_gpu_rows.jsonl (each run's row as it finishes, so a run cut
#   short still reports), device_tests.log, speed_gpu.log.
# Override the sizes with CELLS="100000 1000000 2000000" BATCH_SIZES="128 4096" STEPS=300. A dry run on
# a CPU machine: LAUNCHER=/path/to/python-wrapper ACCELERATOR=cpu CELLS=2000 BATCH_SIZES=64 STEPS=5 GENES=100.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_speed.sh OUT_FOLDER}
mkdir -p "$out"
cells=${CELLS:-100000 1000000}
batch_sizes=${BATCH_SIZES:-128 1024 4096}
steps=${STEPS:-150}
genes=${GENES:-2000}
accelerator=${ACCELERATOR:-gpu}
# on_device.sh installs the carried wheels (the newest scverse stack and compvi) and runs the rest.
read -r -a launcher <<< "${LAUNCHER:-bash .device-wheels/on_device.sh}"
start=$(date +%s)

{ nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || echo "no nvidia-smi"; } \
    | tee "$out/speed_gpu.log"
echo "== device-path tests on CUDA" | tee -a "$out/speed_gpu.log"
timeout 120 "${launcher[@]}" python -m pytest -q -p no:cacheprovider \
    tests/test_device_data.py -rs 2>&1 | tee "$out/device_tests.log" | tail -5
echo "== tests took $(( $(date +%s) - start )) s" | tee -a "$out/speed_gpu.log"

# shellcheck disable=SC2086  # the lists are meant to split into arguments
"${launcher[@]}" python benchmarks/speed.py --cells $cells --genes "$genes" \
    --batch-size $batch_sizes --loader-batch-size 128 --contrastive-batch-size 128 \
    --steps "$steps" --warmup-steps 20 --pool 50000 --accelerator "$accelerator" \
    --out "$out" --tag gpu 2>&1 | tee -a "$out/speed_gpu.log"
status=${PIPESTATUS[0]}
echo "== speed.py exited $status after $(( $(date +%s) - start )) s in all" | tee -a "$out/speed_gpu.log"
exit "$status"
