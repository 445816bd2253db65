#!/usr/bin/env bash
# Measures kiln's CPU f32 matmul and numpy's at 1024^3 in one run on this machine, same warm-up and
# repeats. Needs numpy (python3 -m venv .venv && .venv/bin/pip install numpy threadpoolctl).
# Usage: tools/cpu-matmul-vs-numpy.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
cargo build --release -q -p kiln
threads=$(nproc)
echo "== kiln, CPU backend ($threads threads)"
./target/release/kiln --device cpu bench kernels --filter "matmul square" --dtype f32 --warmup 2 --iters 10
echo "== numpy ($threads threads)"
# Some machines here set OPENBLAS_CORETYPE for old OpenBLAS builds; it slows a current numpy.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" \
    "$python" tools/numpy_matmul_bench.py --size 1024 --warmup 2 --iters 10 | grep -E '"(mean_ms|gflops|device)"'
