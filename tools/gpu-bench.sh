#!/usr/bin/env bash
# kiln against PyTorch on one machine, in one go: kernel and model benchmarks on both sides, the
# side-by-side tables, one txt2img run's stage times and per-step host overhead, and (optionally) the
# kernel tests on the real device. Made for a GPU machine with no network, PyTorch installed and a
# release `kiln` built elsewhere; `--quick` runs the same path with tiny shapes on any machine (CPU or
# a software Vulkan adapter), which cli/tests/gpu_bench.rs checks.
#
#   tools/gpu-bench.sh [--quick] [--kiln PATH] [--out DIR] [--device D] [--python PY] [--no-torch]
#                      [--tests DIR] [--threads N]
#
#   --kiln     the kiln binary (default: target/release/kiln)
#   --out      results folder (default: $OUT if set, else ./bench-out)
#   --device   kiln's --device (default: auto)
#   --python   Python with torch (default: python3); diffusers is needed for the model rows: wheels in
#              .whl/ are installed into a temporary folder first when present
#   --no-torch kiln side only
#   --tests    a folder of prebuilt test binaries (`cargo test --release --no-run`) to run on the device
#   --threads  CPU threads for PyTorch when the device is the CPU (default: all)
#
# Writes to the results folder: env.txt, devices.json, kernels-kiln.json, kernels-torch.json,
# kernels.md, models-kiln.json, models-torch.json, models.md, sd.json, summary.md (and tests.log).
set -euo pipefail

quick=""
kiln="target/release/kiln"
out="${OUT:-bench-out}"
device="auto"
python="python3"
torch=1
tests=""
threads=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick="--quick" ;;
        --kiln) kiln="$2"; shift ;;
        --out) out="$2"; shift ;;
        --device) device="$2"; shift ;;
        --python) python="$2"; shift ;;
        --no-torch) torch=0 ;;
        --tests) tests="$2"; shift ;;
        --threads) threads="$2"; shift ;;
        -h|--help) sed -n 2,22p "$0"; exit 0 ;;
        *) echo "gpu-bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

here="$(cd "$(dirname "$0")" && pwd)"
[ -x "$kiln" ] || { echo "gpu-bench.sh: no kiln binary at $kiln (build with cargo build --release)" >&2; exit 2; }
mkdir -p "$out"
k() { "$kiln" --device "$device" "$@"; }
log() { echo "== $(date +%T) $*"; }

log "environment"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "commit: ${KILN_COMMIT:-$(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)}"
    echo "kiln: $("$kiln" --version)"
    echo "host: $(uname -srm), $(nproc) CPUs"
    grep -m1 "model name" /proc/cpuinfo 2>/dev/null || true
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    fi
} | tee "$out/env.txt"
"$kiln" devices --json > "$out/devices.json"
k devices | tee -a "$out/env.txt"

# Models in f16 on a GPU (what users run); the CPU backend computes in f32.
model_dtype="f16"
if [ "$device" = "cpu" ] || ! k devices --json | grep -q '"f16": *true'; then model_dtype="f32"; fi

log "kiln kernels"
k bench kernels $quick --json "$out/kernels-kiln.json"
log "kiln models ($model_dtype)"
k bench models $quick --dtype "$model_dtype" --json "$out/models-kiln.json"
log "kiln txt2img stages (bundled model)"
if [ -n "$quick" ]; then steps=2; else steps=20; fi
k bench sd --steps "$steps" --json "$out/sd.json"

have_torch=0
if [ "$torch" = 1 ]; then
    if [ -d "$here/../.whl" ] && ls "$here/../.whl"/*.whl >/dev/null 2>&1; then
        site="$(mktemp -d)"
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
            "$here/../.whl"/*.whl
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    if "$python" -c "import torch" 2>/dev/null; then have_torch=1; else
        echo "gpu-bench.sh: $python has no torch: kiln side only" >&2
    fi
fi

torch_device="cpu"
if [ "$have_torch" = 1 ] && [ "$device" != "cpu" ] && "$python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    torch_device="cuda"
fi
tflags=(--device "$torch_device")
[ -n "$threads" ] && tflags+=(--threads "$threads")

summary="$out/summary.md"
{
    echo "# kiln benchmarks"
    echo
    echo '```'
    cat "$out/env.txt"
    echo '```'
} > "$summary"
for what in kernels models; do
    if [ "$have_torch" = 1 ]; then
        log "PyTorch $what ($torch_device)"
        "$python" "$here/torch_bench.py" --cases "$out/$what-kiln.json" --out "$out/$what-torch.json" "${tflags[@]}"
        "$kiln" bench compare "$out/$what-kiln.json" "$out/$what-torch.json" --markdown "$out/$what.md" >/dev/null
        { echo; echo "## $what"; echo; cat "$out/$what.md"; } >> "$summary"
    fi
done
{
    echo
    echo "## txt2img stages (kiln bench sd, bundled model)"
    echo
    echo '```'
    "$python" -c "import json,sys; r=json.load(open(sys.argv[1])); print('\n'.join(f'{k}: {v}' for k,v in r.items() if k!='step_ms'))" "$out/sd.json" 2>/dev/null \
        || cat "$out/sd.json"
    echo '```'
} >> "$summary"

if [ -n "$tests" ]; then
    log "kernel and model tests on the device"
    # Test binaries find their fixtures under the checkout they were built in: link it here.
    if [ -f "$tests/../BUILD_ROOT" ]; then
        root="$(cat "$tests/../BUILD_ROOT")"
        [ -e "$root" ] || { mkdir -p "$(dirname "$root")" && ln -s "$(cd "$here/.." && pwd)" "$root"; }
    fi
    # Without KILN_TEST_DEVICE the tests take the best hardware adapter.
    [ "$device" = "auto" ] || export KILN_TEST_DEVICE="$device"
    status=0
    for t in "$tests"/*; do
        [ -x "$t" ] || continue
        echo "--- $(basename "$t")" >> "$out/tests.log"
        CI=true "$t" >> "$out/tests.log" 2>&1 || status=1
    done
    echo "tests: $([ $status = 0 ] && echo passed || echo FAILED) (tests.log)" | tee -a "$summary"
fi
log "done: $summary"
