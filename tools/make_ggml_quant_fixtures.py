"""Writes tests/fixtures/ggml-quants/: small GGUF files quantised by llama.cpp's own `llama-quantize`,
one per ggml block type kiln reads, with gguf-py's dequantised floats as goldens.

For each family a float source file is written first (architecture "llama" with the few hyperparameters
llama-quantize's model loader asks for, and F32 matrices of odd row counts: K = 256 / 512 for the
256-weight K-quants, K = 64 / 96 / 160 for the 32-weight legacy types), then

    llama-quantize --pure SRC.gguf TYPE.gguf TYPE

turns every matrix into TYPE (`--pure`: no per-tensor mixture; the script checks that no tensor fell
back to another type). Rows are standard normal times a per-row scale from 1e-5 (f16 scales below the
normal range) to 30, with one all-zero row, so zero and subnormal scales are covered.

Outputs, per TYPE (q4_k, q6_k, q5_k, q3_k, q2_k, q4_1, q5_0, q5_1, q8_0, q4_0):
    TYPE.gguf         llama-quantize's file as written (metadata and the packed tensors)
    TYPE.golden.gguf  the same tensor names as F32: gguf-py's `quants.dequantize` of each tensor
and per family the float source every TYPE of the family was quantised from, so kiln's own
quantisers can be checked block for block against llama-quantize's:
    k_source.gguf       F32 a/b/c.weight of the K-quants (rows of 256 / 512)
    legacy_source.gguf  F32 a/b/c.weight of the 32-weight types (rows of 64 / 96 / 160)

    /tmp/venv-vis/bin/python tools/make_ggml_quant_fixtures.py \\
        --quantize /tmp/llama.cpp-build/build/bin/llama-quantize [--out tests/fixtures/ggml-quants]

Needs numpy and gguf-py (`pip install -e llama.cpp/gguf-py`). The fixtures are deterministic for a
given llama.cpp build (seeded data; llama-quantize's reference quantisers are deterministic).
"""

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf.quants import dequantize

ROOT = Path(__file__).resolve().parent.parent

K_QUANTS = ["q4_k", "q6_k", "q5_k", "q3_k", "q2_k"]
LEGACY = ["q4_1", "q5_0", "q5_1", "q8_0", "q4_0"]
# (name, rows, K): odd row counts; llama-quantize only quantises names ending in "weight".
K_SHAPES = [("a.weight", 7, 256), ("b.weight", 13, 512), ("c.weight", 33, 256)]
LEGACY_SHAPES = [("a.weight", 7, 64), ("b.weight", 13, 96), ("c.weight", 33, 160)]


def matrix(rng, rows, k):
    scales = np.geomspace(1e-5, 30.0, rows).astype(np.float32)
    rng.shuffle(scales)
    m = rng.standard_normal((rows, k)).astype(np.float32) * scales[:, None]
    m[rows // 2] = 0.0
    return m


def write_source(path, shapes, seed):
    w = GGUFWriter(str(path), "llama")
    # What llama_model::load_hparams reads for "llama"; no vocabulary is needed to quantise.
    w.add_context_length(64)
    w.add_embedding_length(256)
    w.add_block_count(1)
    w.add_feed_forward_length(512)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    rng = np.random.default_rng(seed)
    for name, rows, k in shapes:
        w.add_tensor(name, matrix(rng, rows, k))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def golden(quantized, out):
    reader = GGUFReader(str(quantized))
    w = GGUFWriter(str(out), "golden")
    for t in reader.tensors:
        values = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        # GGUF lists dimensions innermost first; numpy wants rows first.
        w.add_tensor(t.name, values.reshape([int(d) for d in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return reader


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quantize", required=True, help="path of llama.cpp's llama-quantize")
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures/ggml-quants"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = {}
    for family, shapes, seed in [("k", K_SHAPES, 1), ("legacy", LEGACY_SHAPES, 2)]:
        sources[family] = out / f"{family}_source.gguf"
        write_source(sources[family], shapes, seed)
    for ty in K_QUANTS + LEGACY:
        src = sources["k" if ty in K_QUANTS else "legacy"]
        dst = out / f"{ty}.gguf"
        run = subprocess.run([args.quantize, "--pure", str(src), str(dst), ty.upper()],
                             capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"llama-quantize {ty} failed:\n{run.stdout}\n{run.stderr}")
        reader = golden(dst, out / f"{ty}.golden.gguf")
        want = GGMLQuantizationType[ty.upper()]
        for t in reader.tensors:
            if t.tensor_type != want:
                sys.exit(f"{ty}: tensor {t.name} came out as {t.tensor_type.name}")
        print(f"{ty}: {', '.join(f'{t.name} {list(reversed(t.shape.tolist()))}' for t in reader.tensors)}")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({total} bytes)")


if __name__ == "__main__":
    main()
