#!/usr/bin/env bash
# kiln serve vs llama-server on this CPU, one after the other: the same random-weight Mistral shape
# on both (kiln: a transformers folder of random f16 weights, loaded as q4_0; llama.cpp: a random
# Q4_0 GGUF of the same shapes), both started with PARALLEL slots over CTX tokens in total, then
# `kiln bench serve` sends STREAMS concurrent streamed /v1/completions to each (PROMPT_TOKENS-token
# prompts, MAX_TOKENS generated, EOS banned, greedy) and reports aggregate tok/s, time to first token
# and per-stream decode tok/s. JSON and server logs go to OUT (default docs/bench/serve-cpu-<date>/).
#
# Usage: tools/serve-side-by-side.sh [CONFIG]   (default: benches/configs/mistral-1b-serve.json)
#   KILN          kiln binary (default target/release/kiln; cargo build --release -p kiln)
#   LLAMA_SERVER  llama-server binary (default /tmp/llama.cpp-build/build/bin/llama-server; build it
#                 with tools/build-llama-cpp.sh after `cmake <dest>/build -DLLAMA_BUILD_SERVER=ON
#                 -DLLAMA_USE_PREBUILT_UI=OFF` and `cmake --build <dest>/build --target llama-server`)
#   PYTHON        a python with numpy and gguf (default /tmp/venv-bench/bin/python)
#   WORK          where the random models are written once and reused (default /tmp/kiln-serve-bench)
#   STREAMS=1,4,16  PARALLEL=16  CTX=4096  PROMPT_TOKENS=128  MAX_TOKENS=64  THREADS=2  PORT=18480
#   ONLY=kiln|llama  run one side only    TAG  suffix for this run's file names (e.g. t1)
#   SERVER_CPUS  taskset CPU list for both servers (e.g. 0)
#   LOGPROBS=1  ask for logprobs, so every token is its own chunk (times tokens, not text)
set -euo pipefail
config=${1:-benches/configs/mistral-1b-serve.json}
kiln=${KILN:-target/release/kiln}
llama_server=${LLAMA_SERVER:-/tmp/llama.cpp-build/build/bin/llama-server}
python=${PYTHON:-/tmp/venv-bench/bin/python}
work=${WORK:-/tmp/kiln-serve-bench}
out=${OUT:-docs/bench/serve-cpu-$(date -u +%Y-%m-%d)}
streams=${STREAMS:-1,4,16}
parallel=${PARALLEL:-16}
ctx=${CTX:-4096}
prompt=${PROMPT_TOKENS:-128}
max_tokens=${MAX_TOKENS:-64}
threads=${THREADS:-2}
port=${PORT:-18480}
name=$(basename "$config" .json)
folder=$work/$name
gguf=$work/$name-q4_0.gguf
mkdir -p "$out" "$work"

[ -f "$folder/model.safetensors" ] ||
    "$python" tools/make_random_llm_folder.py "$config" "$folder" --tokenizer tests/fixtures/llm/tokenizer
[ -f "$gguf" ] || "$python" tools/make_random_gguf.py "$config" "$gguf" --type q4_0

# SERVER_CPUS=0 pins both servers to those CPUs (taskset), e.g. to compare at one thread: kiln
# sizes its thread pool from the CPUs it may run on.
pin=()
[ -z "${SERVER_CPUS:-}" ] || pin=(taskset -c "$SERVER_CPUS")
server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

# Waits until GET /health answers 200 (llama-server answers 503 while it loads).
wait_healthy() {
    for _ in $(seq 1 600); do
        if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then return 0; fi
        if ! kill -0 "$server_pid" 2>/dev/null; then echo "the server exited; see its log" >&2; return 1; fi
        sleep 1
    done
    echo "the server did not become healthy in 600 s" >&2
    return 1
}

bench() {
    "$kiln" bench serve --url "http://127.0.0.1:$port" --streams "$streams" --max-tokens "$max_tokens" \
        --prompt-tokens "$prompt" ${LOGPROBS:+--logprobs} --label "$1" --json "$out/$1-$name${TAG:+-$TAG}.json"
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kiln: $("$kiln" --version) at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo ' (modified tree)')"
    echo "llama.cpp: $(cat "$(dirname "$(dirname "$(dirname "$llama_server")")")/VERSION" 2>/dev/null || echo unknown)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) threads; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "shape: $config; prompt $prompt tokens, $max_tokens generated, streams $streams, $parallel slots, ctx $ctx, llama.cpp threads $threads, server CPUs ${SERVER_CPUS:-all}, logprobs ${LOGPROBS:-no}"
} | tee -a "$out/run-info${TAG:+-$TAG}.txt"

if [ "${ONLY:-}" != llama ]; then
    echo "== kiln serve --parallel $parallel --ctx-size $ctx --weight-type q4_0"
    "${pin[@]}" "$kiln" --device cpu serve -m "$folder" --weight-type q4_0 --parallel "$parallel" --ctx-size "$ctx" \
        --port "$port" >"$out/kiln-server${TAG:+-$TAG}.log" 2>&1 &
    server_pid=$!
    wait_healthy
    bench kiln
    stop_server
fi

if [ "${ONLY:-}" != kiln ]; then
    echo "== llama-server -np $parallel -c $ctx -t $threads"
    "${pin[@]}" "$llama_server" -m "$gguf" -np "$parallel" -c "$ctx" -t "$threads" -tb "$threads" --host 127.0.0.1 \
        --port "$port" >"$out/llama-server${TAG:+-$TAG}.log" 2>&1 &
    server_pid=$!
    wait_healthy
    bench llama-cpp
    stop_server
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/run-info${TAG:+-$TAG}.txt"
echo "wrote $out"
