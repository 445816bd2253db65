"""Writes a llama.cpp-loadable GGUF with random weights of a Mistral-family config's exact shapes, for
the CPU LLM benchmarks (tools/llm-cpu-side-by-side.sh: kiln and llama-bench read the same file):
architecture "llama" (as llama.cpp's converter writes Mistral), norms in F32, a minimal
SentencePiece-style vocabulary of the config's size (<unk> <s> </s>, 256 byte tokens, filler tokens),
and every 2-D weight in one type (q4_0, q8_0) or, for q4_k_m, in the types llama-quantize's Q4_K_M
picks for a dense llama-architecture model (src/llama-quant.cpp): Q6_K for `output` and for
`attn_v` / `ffn_down` of the "more bits" layers (the first and last eighth, and every third between),
Q4_K for everything else, the token embedding included.

Quantised blocks are random bytes (no float data is quantised, so a 24B file takes minutes) with small
positive f16 scales (ranges in BLOCKS), so activations stay finite and normal. Tensors are generated
and written one at a time, so memory stays at the size of the largest one.

    .venv/bin/python tools/make_random_gguf.py benches/configs/mistral-7b.json /tmp/kiln-bench/mistral-7b-q4_0.gguf --type q4_0
    .venv/bin/python tools/make_random_gguf.py CONFIG OUT.gguf --type q8_0 --seed 1
    .venv/bin/python tools/make_random_gguf.py CONFIG OUT.gguf --type q4_k_m
    .venv/bin/python tools/make_random_gguf.py CONFIG OUT.gguf --type q4_0 --dry-run   # size only
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType

Q = GGMLQuantizationType
TYPES = {"q4_0": LlamaFileType.MOSTLY_Q4_0, "q8_0": LlamaFileType.MOSTLY_Q8_0, "q4_k_m": LlamaFileType.MOSTLY_Q4_K_M}
# Per block type: byte offsets of its f16 scales, and the range they are drawn from (weights stay
# below ~0.1 in magnitude: Q4_K's 6-bit sub-scales times 4-bit codes, Q6_K's 8-bit times 6-bit).
BLOCKS = {
    Q.Q4_0: ((0,), (0.001, 0.01)),
    Q.Q8_0: ((0,), (0.0001, 0.001)),
    Q.Q4_K: ((0, 2), (0.00001, 0.0001)),
    Q.Q6_K: ((208,), (0.000001, 0.00001)),
}


def use_more_bits(i, n):
    """llama-quantize's layers that get more bits in the _M mixes."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def block_type(kind, name, n_layer):
    """The ggml type of weight `name` in a file of type `kind`."""
    if kind == "q4_0":
        return Q.Q4_0
    if kind == "q8_0":
        return Q.Q8_0
    if name == "output.weight":
        return Q.Q6_K
    if name.endswith(("attn_v.weight", "ffn_down.weight")):
        return Q.Q6_K if use_more_bits(int(name.split(".")[1]), n_layer) else Q.Q4_K
    return Q.Q4_K


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


def random_blocks(rng, rows, cols, qtype):
    """rows x (cols/block) blocks of random bytes whose f16 scales are small and positive."""
    block, bsize = GGML_QUANT_SIZES[qtype]
    offsets, scale_range = BLOCKS[qtype]
    assert cols % block == 0, f"row length {cols} is not a multiple of {block}"
    n = rows * (cols // block) * bsize
    data = rng.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n].reshape(rows, cols // block, bsize)
    lo, hi = (int(np.float16(s).view(np.uint16)) for s in scale_range)  # positive f16 bits sort like values
    for at in offsets:
        scales = rng.integers(lo, hi + 1, size=(rows, cols // block), dtype=np.uint16)
        data[:, :, at:at + 2] = scales[..., None].view(np.uint8)
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
    ftype = TYPES[a.type]
    shapes = tensor_shapes(c)
    qtype = {n: block_type(a.type, n, c["num_hidden_layers"]) for n, _, m in shapes if m}

    def nbytes(name, s, m):
        if not m:
            return s[0] * 4
        block, bsize = GGML_QUANT_SIZES[qtype[name]]
        return s[0] * s[1] // block * bsize

    total = sum(nbytes(*t) for t in shapes)
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
            block, bsize = GGML_QUANT_SIZES[qtype[name]]
            w.add_tensor_info(name, (s[0], s[1] // block * bsize), np.dtype(np.uint8), nbytes(name, s, m),
                              raw_dtype=qtype[name])
        else:
            w.add_tensor_info(name, s, np.dtype(np.float32), nbytes(name, s, m))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(a.seed)
    for name, s, m in shapes:
        w.write_tensor_data(random_blocks(rng, *s, qtype[name]) if m else np.ones(s, np.float32))
    w.close()
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e9:.2f} GB)", file=sys.stderr)


if __name__ == "__main__":
    main()
