#!/usr/bin/env bash
# kiln vs llama.cpp on this CPU, one after the other in one run: random weights of one LLM config at
# q4_0 (kiln builds them in memory, llama.cpp reads a random GGUF of the same shapes from
# tools/make_random_gguf.py), prefill of PREFILL tokens and decode of DECODE tokens from an empty
# cache, 2 threads each (kiln also at the cache depths in DEPTHS, default 0; llama-bench would have
# to prefill each depth for real, minutes per thousand tokens here). Raw JSON goes to OUT (default
# docs/bench/llm-cpu-<date>/).
#
# Usage: tools/llm-cpu-side-by-side.sh CONFIG GGUF [PREFILL] [DECODE]
#   KILN   the kiln binary (default: target/release/kiln; build it with cargo build --release -p kiln)
#   needs llama-bench from tools/build-llama-cpp.sh (LLAMA_BENCH overrides its path)
set -euo pipefail
config=${1:?usage: tools/llm-cpu-side-by-side.sh CONFIG GGUF [PREFILL] [DECODE]}
gguf=${2:?usage: tools/llm-cpu-side-by-side.sh CONFIG GGUF [PREFILL] [DECODE]}
prefill=${3:-64}
decode=${4:-16}
kiln=${KILN:-target/release/kiln}
out=${OUT:-docs/bench/llm-cpu-$(date -u +%Y-%m-%d)}
name=$(basename "$config" .json)
mkdir -p "$out"
"$kiln" --device cpu bench llm --random "$config" --weight-type q4_0 --prefill "$prefill" \
    --depths "${DEPTHS:-0}" --decode-tokens "$decode" --json "$out/kiln-$name-q4_0.json"
REPS=${REPS:-2} tools/llama-cpp-bench.sh "$gguf" "$prefill" "$decode" "$out/llama-cpp-$name-q4_0.json"
