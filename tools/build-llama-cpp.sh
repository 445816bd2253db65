#!/usr/bin/env bash
# Builds llama.cpp's CPU tools (llama-bench, llama-quantize, llama-completion, llama-simple) from source
# for the side-by-side benchmarks in docs/PERFORMANCE.md: Release, CPU only, GGML_NATIVE=ON, static,
# no network code. The sources come from the llama-cpp-python sdist on PyPI (it vendors llama.cpp), so
# only a package registry is needed. In that version llama-cli belongs to the server build, so the
# plain generation tools are llama-completion and llama-simple.
#
# Usage: tools/build-llama-cpp.sh [DEST]   (default DEST: /tmp/llama.cpp-build; needs cmake, g++, pip)
#   JOBS=N  parallel compile jobs (default: nproc). Prefix with `nice -n 19` on a shared machine.
# The sdist has no git metadata; the vendored llama.cpp commit is read from its CHANGELOG.md and
# passed to cmake, so `llama-bench -o json` reports it as build_commit. Writes DEST/VERSION.
set -euo pipefail
dest=${1:-/tmp/llama.cpp-build}
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
mkdir -p "$dest"
cd "$dest"
if [ ! -d "llama_cpp_python-$version" ]; then
    python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d sdist
    tar xzf "sdist/llama_cpp_python-$version.tar.gz"
fi
pkg="$dest/llama_cpp_python-$version"
src="$pkg/vendor/llama.cpp"
# First "update llama.cpp to ggml-org/llama.cpp@<hash>" line under the "## [$version]" heading.
commit=$(awk -v v="## [$version]" '$0==v{f=1;next} f&&/^## \[/{exit} f&&match($0,/llama\.cpp@[0-9a-f]+/){print substr($0,RSTART+10,RLENGTH-10);exit}' "$pkg/CHANGELOG.md")
commit=${commit:-unknown}
start=$(date +%s)
cmake -S "$src" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMIT="$commit" >/dev/null
cmake --build "$dest/build" -j"${JOBS:-$(nproc)}" --target llama-bench llama-quantize llama-completion llama-simple
echo "llama-cpp-python $version, llama.cpp ggml-org/llama.cpp@$commit, built $(date -u +%FT%TZ) in $(( $(date +%s) - start )) s" \
    | tee "$dest/VERSION"
echo "built: $dest/build/bin/{llama-bench,llama-quantize,llama-completion,llama-simple}"
