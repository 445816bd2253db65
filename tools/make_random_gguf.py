"""Writes a llama.cpp-loadable GGUF with random weights of a Mistral-family config's exact shapes, for
the llama.cpp side of the CPU LLM benchmarks (tools/llama-cpp-bench.sh): architecture "llama" (as
llama.cpp's converter writes Mistral), every 2-D weight in Q4_0 or Q8_0, norms in F32, and a minimal
SentencePiece-style vocabulary of the config's size (<unk> <s> </s>, 256 byte tokens, filler tokens).

Quantised blocks are random bytes (no float data is quantised, so a 24B file takes minutes) with small
positive f16 scales, Q4_0 in [0.001, 0.01] and Q8_0 ten times smaller, so activations stay finite.
Tensors are generated and written one at a time, so memory stays at the size of the largest one.

    .venv/bin/python tools/make_random_gguf.py benches/configs/mistral-7b.json /tmp/kiln-bench/mistral-7b-q4_0.gguf --type q4_0
    .venv/bin/python tools/make_random_gguf.py CONFIG OUT.gguf --type q8_0 --seed 1
    .venv/bin/python tools/make_random_gguf.py CONFIG OUT.gguf --type q4_0 --dry-run   # size only
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType

TYPES = {
    "q4_0": (GGMLQuantizationType.Q4_0, LlamaFileType.MOSTLY_Q4_0, (0.001, 0.01)),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0, (0.0001, 0.001)),
}


def tensor_shapes(c):
    """(name, numpy shape (rows, cols) as in the HF checkpoint, is_matrix) in llama.cpp's naming."""
    h, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = c.get("head_dim") or h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    out = [("token_embd.weight", (v, h), True)]
    for i in range(c["num_hidden_layers"]):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", (h,), False), (b + "attn_q.weight", (q, h), True),
                (b + "attn_k.weight", (kv, h), True), (b + "attn_v.weight", (kv, h), True),
                (b + "attn_output.weight", (h, q), True), (b + "ffn_norm.weight", (h,), False),
                (b + "ffn_gate.weight", (f, h), True), (b + "ffn_up.weight", (f, h), True),
                (b + "ffn_down.weight", (h, f), True)]
    out += [("output_norm.weight", (h,), False), ("output.weight", (v, h), True)]
    return out


def random_blocks(rng, rows, cols, qtype, scale_range):
    """rows x (cols/32) blocks of random bytes whose first two bytes are a small positive f16 scale."""
    block, bsize = GGML_QUANT_SIZES[qtype]
    assert cols % block == 0, f"row length {cols} is not a multiple of {block}"
    n = rows * (cols // block) * bsize
    data = rng.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n].reshape(rows, cols // block, bsize)
    lo, hi = (int(np.float16(s).view(np.uint16)) for s in scale_range)  # positive f16 bits sort like values
    data[:, :, 0:2] = rng.integers(lo, hi + 1, size=(rows, cols // block), dtype=np.uint16)[..., None].view(np.uint8)
    return data.reshape(rows, cols // block * bsize)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, help="Hugging Face config.json of a Mistral-family text model")
    ap.add_argument("out", type=Path)
    ap.add_argument("--type", choices=sorted(TYPES), default="q4_0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="print the tensor count and file size, write nothing")
    a = ap.parse_args()
    c = json.loads(a.config.read_text())
    qtype, ftype, scale_range = TYPES[a.type]
    block, bsize = GGML_QUANT_SIZES[qtype]
    shapes = tensor_shapes(c)
    nbytes = lambda s, m: s[0] * s[1] // block * bsize if m else s[0] * 4
    total = sum(nbytes(s, m) for _, s, m in shapes)
    params = sum(int(np.prod(s)) for _, s, _ in shapes)
    print(f"{a.config.name}: {len(shapes)} tensors, {params / 1e9:.2f} B parameters, "
          f"{a.type} data {total / 1e9:.2f} GB ({total / 2**30:.2f} GiB)", file=sys.stderr)
    if a.dry_run:
        return

    hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    w = GGUFWriter(a.out, "llama")
    w.add_name(f"{a.config.stem} (random weights, seed {a.seed})")
    w.add_file_type(int(ftype))
    w.add_quantization_version(2)
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(float(c["rope_theta"]))
    w.add_layer_norm_rms_eps(float(c["rms_norm_eps"]))
    w.add_vocab_size(c["vocab_size"])

    # Minimal SentencePiece ("llama") vocabulary: enough for llama.cpp to load, tokenize and detokenize.
    n_fill = c["vocab_size"] - 3 - 256
    assert n_fill >= 0, "vocab_size must be at least 259"
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
                     + [f"<filler_{i}>" for i in range(n_fill)])
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(n_fill)])
    w.add_token_types([TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
                      + [TokenType.NORMAL] * n_fill)
    w.add_unk_token_id(0)
    w.add_bos_token_id(c.get("bos_token_id", 1))
    w.add_eos_token_id(c.get("eos_token_id", 2))
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    for name, s, m in shapes:
        if m:
            w.add_tensor_info(name, (s[0], s[1] // block * bsize), np.dtype(np.uint8), nbytes(s, m), raw_dtype=qtype)
        else:
            w.add_tensor_info(name, s, np.dtype(np.float32), nbytes(s, m))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(a.seed)
    for name, s, m in shapes:
        w.write_tensor_data(random_blocks(rng, *s, qtype, scale_range) if m else np.ones(s, np.float32))
    w.close()
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e9:.2f} GB)", file=sys.stderr)


if __name__ == "__main__":
    main()
