#!/usr/bin/env bash
# Builds llama.cpp's CPU tools (llama-bench, llama-cli, llama-quantize) from source for the side-by-side
# benchmarks in docs/PERFORMANCE.md. The sources come from the llama-cpp-python sdist on PyPI (it
# vendors llama.cpp), so only a package registry is needed.
#
# Usage: tools/build-llama-cpp.sh [DEST]   (default DEST: /tmp/llama.cpp-build; needs cmake, g++, pip)
set -euo pipefail
dest=${1:-/tmp/llama.cpp-build}
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
mkdir -p "$dest"
cd "$dest"
if [ ! -d "llama_cpp_python-$version" ]; then
    python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d sdist
    tar xzf "sdist/llama_cpp_python-$version.tar.gz"
fi
src="$dest/llama_cpp_python-$version/vendor/llama.cpp"
cmake -S "$src" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build "$dest/build" -j"$(nproc)" --target llama-bench llama-cli llama-quantize
echo "built: $dest/build/bin/{llama-bench,llama-cli,llama-quantize}"
