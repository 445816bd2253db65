#!/usr/bin/env bash
# kiln vs llama.cpp on this CPU, one after the other in one run, 2 threads each (THREADS): prefill
# of PREFILL tokens and decode of DECODE tokens from an empty cache (kiln also at the cache depths
# in DEPTHS, default 0; llama-bench would have to prefill each depth for real, minutes per thousand
# tokens here). Raw JSON goes to OUT (default docs/bench/llm-cpu-<date>/).
#
# Usage: tools/llm-cpu-side-by-side.sh FILE.gguf [PREFILL] [DECODE]
#          both read the same GGUF file (e.g. tools/make_random_gguf.py --type q4_k_m or q8_0)
#        tools/llm-cpu-side-by-side.sh CONFIG.json FILE.gguf [PREFILL] [DECODE]
#          kiln builds random q4_0 weights of CONFIG's shapes in memory, llama.cpp reads FILE
#   KILN   the kiln binary (default: target/release/kiln; build it with cargo build --release -p kiln)
#   needs llama-bench from tools/build-llama-cpp.sh (LLAMA_BENCH overrides its path)
set -euo pipefail
usage="usage: tools/llm-cpu-side-by-side.sh [CONFIG.json] FILE.gguf [PREFILL] [DECODE]"
first=${1:?$usage}
if [[ $first == *.json ]]; then
    config=$first
    gguf=${2:?$usage}
    shift 2
else
    config=
    gguf=$first
    shift 1
fi
prefill=${1:-64}
decode=${2:-16}
kiln=${KILN:-target/release/kiln}
out=${OUT:-docs/bench/llm-cpu-$(date -u +%Y-%m-%d)}
mkdir -p "$out"
export RAYON_NUM_THREADS=${THREADS:-2}
if [[ -n $config ]]; then
    name=$(basename "$config" .json)-q4_0
    "$kiln" --device cpu bench llm --random "$config" --weight-type q4_0 --prefill "$prefill" \
        --depths "${DEPTHS:-0}" --decode-tokens "$decode" --json "$out/kiln-$name.json"
else
    name=$(basename "$gguf" .gguf)
    "$kiln" --device cpu bench llm -m "$gguf" --prefill "$prefill" \
        --depths "${DEPTHS:-0}" --decode-tokens "$decode" --json "$out/kiln-$name.json"
fi
REPS=${REPS:-2} tools/llama-cpp-bench.sh "$gguf" "$prefill" "$decode" "$out/llama-cpp-$name.json"
