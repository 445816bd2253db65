#!/usr/bin/env bash
# Prepares, on a machine with network and Rust, everything tools/gpu-bench.sh needs on a GPU machine
# that has neither: a stripped release `kiln`, stripped kernel / model test binaries, the Vulkan and
# GL loader packages, and the diffusers wheel (PyTorch itself is expected there).
#
#   tools/gpu-prepare.sh    # writes bench-bin.tar.xz, .gl/ and .whl/ (all git-ignored), ~20 MB together
#
# Then, on the GPU machine, from the repository root (the device tool carries bench-bin.tar.xz, .gl
# and .whl; xz keeps them with the working tree under its 64 MiB):
#   for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; tar -xJf bench-bin.tar.xz
#   KILN_COMMIT=$(cat bench-bin/COMMIT) tools/gpu-bench.sh --kiln bench-bin/kiln --tests bench-bin/tests
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== release kiln"
cargo build --release -p kiln
mkdir -p bench-bin/tests
strip -o bench-bin/kiln target/release/kiln
git rev-parse --short HEAD > bench-bin/COMMIT
pwd > bench-bin/BUILD_ROOT

echo "== test binaries (kernels against the CPU reference; UNet / pipeline goldens)"
rm -f bench-bin/tests/*
cargo test --release --no-run -p kiln-kernels -p kiln-tests --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        name = m["target"]["name"]
        if name in ("kiln_kernels", "unet", "pipeline", "gpu_overhead", "runtime_gpu"):
            print(m["executable"])
' | while read -r exe; do
    strip -o "bench-bin/tests/$(basename "$exe" | sed 's/-[0-9a-f]*$//')" "$exe"
done
tar -cJf bench-bin.tar.xz bench-bin
ls -la bench-bin bench-bin/tests bench-bin.tar.xz

echo "== Vulkan / GL loaders (amd64 .debs)"
mkdir -p .gl /tmp/amd64/partial
apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
apt-get "${apt_opts[@]}" update -qq
(cd .gl && apt-get "${apt_opts[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

echo "== diffusers wheel (for the UNet / VAE rows of the PyTorch side)"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl diffusers importlib_metadata
du -sh bench-bin.tar.xz .gl .whl
echo "carry: bench-bin.tar.xz .gl .whl"
