#!/usr/bin/env bash
# llama.cpp's side of the CPU LLM benchmarks: llama-bench on one GGUF (e.g. from
# tools/make_random_gguf.py), prompt processing of PREFILL tokens and generation of DECODE tokens, both
# from an empty context (depth 0), on THREADS CPU threads. Writes llama-bench's JSON (one object per
# test, with build_commit, cpu_info, avg_ts / stddev_ts in tokens/s and samples_ns) and prints its
# markdown table. Build llama-bench first with tools/build-llama-cpp.sh.
#
# Usage: tools/llama-cpp-bench.sh GGUF [PREFILL] [DECODE] [JSON]   (defaults: 128, 32,
#        $LLAMA_BENCH_JSON or ${OUT:-.}/llama-bench-<gguf name>.json)
#   LLAMA_BENCH  the binary (default: /tmp/llama.cpp-build/build/bin/llama-bench)
#   THREADS      CPU threads (default: 2)        REPS  repetitions per test (default: 3)
#   Extra llama-bench flags can go in LLAMA_BENCH_ARGS (e.g. "-fa 0" or "-ctk q8_0").
set -euo pipefail
gguf=${1:?usage: tools/llama-cpp-bench.sh GGUF [PREFILL] [DECODE] [JSON]}
prefill=${2:-128}
decode=${3:-32}
json=${4:-${LLAMA_BENCH_JSON:-${OUT:-.}/llama-bench-$(basename "$gguf" .gguf).json}}
bench=${LLAMA_BENCH:-/tmp/llama.cpp-build/build/bin/llama-bench}
mkdir -p "$(dirname "$json")"
# JSON goes to stdout (into the file), the markdown table to stderr; -d 0: depth 0 (empty KV cache).
# shellcheck disable=SC2086
"$bench" -m "$gguf" -p "$prefill" -n "$decode" -d 0 -t "${THREADS:-2}" -r "${REPS:-3}" \
    ${LLAMA_BENCH_ARGS:-} -o json -oe md >"$json"
echo "wrote $json"
