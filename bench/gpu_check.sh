#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one go, for a session lent a GPU machine (about
# 8 minutes on an H100), then the fused Triton path's check and timing (never run yet; at most
# about 5 more minutes). `bash bench/gpu_check.sh triton` runs only the latter, where the whole
# script would not fit one call. Figures land under $OUT (default: gpu-figures/), one file per
# benchmark.
#
# Prepare here, once (both folders are ignored by git and travel with `carry`):
#   mkdir -p .gpu/data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .gpu/data/fashion-mnist/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_17_x86_64 -d .gpu/wheels pydantic pydantic-core annotated-types typing-inspection pillow
#   echo /.gpu/ >> .git/info/exclude
# Then: run(command="bash bench/gpu_check.sh", carry=[".gpu"], timeout_s=600).
set -uo pipefail
OUT=${OUT:-gpu-figures}
mkdir -p "$OUT"
if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export KWSEARCH_DATA_DIR="$PWD/.gpu/data" KWSEARCH_PATH_CACHE="$OUT/paths.json"

{ nvidia-smi --query-gpu=name,driver_version --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; } \
    >"$OUT/device.txt" 2>&1
if [ "${1:-all}" != triton ]; then
    # Operators and ResNet18 steps (kw1x, dyconv, odconv on timed paths; kw1x-model on the cost model's).
    python3 bench/ops.py --device cuda --reps 5 2>&1 | tee "$OUT/ops.txt"
    # The trainer against a hand-written loop, eager and compiled (is compile worth making the default?).
    python3 bench/train.py throughput --device cuda --steps 30 2>&1 | tee "$OUT/train.txt"
    python3 bench/train.py throughput --device cuda --steps 30 --compile 2>&1 | tee "$OUT/train_compiled.txt"
    # Streaming a prepared cache: does the reader (pinned memory, non-blocking copies) keep ResNet18 fed?
    python3 bench/stream.py --device cuda --images 8192 --batch 256 --steps 20 --threads 8 2>&1 | tee "$OUT/stream.txt"
fi
# The fused Triton KernelWarehouse path (opt-in, never run on a GPU before this step): exact on
# this GPU (outputs and gradients against float64), then its speed. In ops_triton.txt kw1x times
# fused_triton among its paths too (a cache file of its own, so it is timed, not read from the
# first run's); kw1x-triton forces it. triton comes with CUDA builds of torch; if it does not
# import, the first step says so.
KWSEARCH_TRITON=1 python3 bench/triton_exact.py 2>&1 | tee "$OUT/triton_exact.txt" &&
    KWSEARCH_TRITON=1 KWSEARCH_PATH_CACHE="$OUT/paths_triton.json" timeout 300 \
        python3 bench/ops.py --device cuda --reps 5 --families static kw1x kw1x-triton 2>&1 | tee "$OUT/ops_triton.txt"
