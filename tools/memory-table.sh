#!/usr/bin/env bash
# Measures docs/MEMORY.md's table: one `kiln bench sd` run per weight type and mode on an SD 1.5-
# architecture model with random weights (tools/make_random_sd15.py), 512x512, CFG 7 (UNet batch 2),
# 2 Euler steps, on the CPU backend, whose byte accounting counts tensors as the GPU pool does (no
# size classes); then `--plan` figures for a GPU target (the pool's size classes) for the modes that
# only differ on a GPU (offloading, the host-held token embedding). Run it on a quiet machine.
#
#   tools/memory-table.sh MODEL_DIR OUT_DIR [GPU_DEVICE]
#
# GPU_DEVICE (e.g. gpu:0, llvmpipe will do: the plan runs on the CPU backend and only replays the
# allocations with the device's pool rules) adds the planned GPU rows.
set -euo pipefail
model=${1:?model dir}
out=${2:?output dir}
gpu=${3:-}
kiln=${KILN:-target/release/kiln}
mkdir -p "$out"

bench() {
    local name=$1
    shift
    echo "== $name" >&2
    "$kiln" --device cpu bench sd -m "$model" --steps 2 -W 512 -H 512 --json "$out/$name.json" "$@" \
        > "$out/$name.txt" 2> "$out/$name.err"
}

tiles=(--vae-tiling --vae-tile-size 32 --vae-tile-overlap 8)
bench f32-whole --weight-type f32
bench f32-tiled --weight-type f32 "${tiles[@]}"
bench f16-tiled --weight-type f16 "${tiles[@]}"
bench q8_0-tiled --weight-type q8_0 "${tiles[@]}"
bench q4_0-whole --weight-type q4_0
bench q4_0-tiled --weight-type q4_0 "${tiles[@]}"
bench nf4-tiled --weight-type nf4 "${tiles[@]}"
bench q4_0-budget-600M --weight-type q4_0 --max-vram 572M
bench nf4-budget-600M --weight-type nf4 --max-vram 572M
bench f16-budget-1G --weight-type f16 --max-vram 953M

if [ -n "$gpu" ]; then
    plan() {
        local name=$1
        shift
        echo "== plan $name" >&2
        "$kiln" --device "$gpu" generate -m "$model" -p "a red circle" -W 512 -H 512 --plan "$@" \
            > "$out/plan-$name.txt" 2> "$out/plan-$name.err"
    }
    plan q4_0-tiled --weight-type q4_0 "${tiles[@]}"
    plan q4_0-tiled-te-cpu --weight-type q4_0 "${tiles[@]}" --text-encoder-on-cpu
    plan q4_0-tiled-te-vae-cpu --weight-type q4_0 "${tiles[@]}" --text-encoder-on-cpu --vae-on-cpu
    plan f16-tiled --weight-type f16 "${tiles[@]}"
fi
python3 "$(dirname "$0")/memory_table.py" "$out" > "$out/table.md"
echo "wrote $out" >&2
