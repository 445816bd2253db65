"""Writes a transformers-style Mistral folder with random f16 weights of a config's shapes, for kiln
serve's side of the serving benchmark (tools/serve-side-by-side.sh): config.json as given, one
model.safetensors (F16, Hugging Face names), and a tokenizer copied from a folder (tokenizer.json and,
when present, tokenizer_config.json and chat_template.jinja). The config's vocab_size must equal the
tokenizer's, so every id the model can sample decodes.

Weights are uniform in [-0.02, 0.02], norms 1; tensors are generated and written one at a time, so
memory stays at the size of the largest one (no safetensors package needed: the header is written by
hand). The same config goes to tools/make_random_gguf.py for llama.cpp's side.

    /tmp/venv-bench/bin/python tools/make_random_llm_folder.py CONFIG OUT_DIR --tokenizer tests/fixtures/llm/tokenizer
"""

import argparse
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np


def tensor_shapes(c):
    """(name, shape, is_norm) in the Hugging Face Mistral naming."""
    h, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = c.get("head_dim") or h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    out = [("model.embed_tokens.weight", (v, h), False)]
    for i in range(c["num_hidden_layers"]):
        b = f"model.layers.{i}."
        out += [(b + "input_layernorm.weight", (h,), True),
                (b + "self_attn.q_proj.weight", (q, h), False),
                (b + "self_attn.k_proj.weight", (kv, h), False),
                (b + "self_attn.v_proj.weight", (kv, h), False),
                (b + "self_attn.o_proj.weight", (h, q), False),
                (b + "post_attention_layernorm.weight", (h,), True),
                (b + "mlp.gate_proj.weight", (f, h), False),
                (b + "mlp.up_proj.weight", (f, h), False),
                (b + "mlp.down_proj.weight", (h, f), False)]
    out.append(("model.norm.weight", (h,), True))
    if not c.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (v, h), False))
    return out


def tokenizer_size(path):
    t = json.loads(path.read_text())
    ids = list(t["model"]["vocab"].values()) + [a["id"] for a in t.get("added_tokens", [])]
    return max(ids) + 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, help="Hugging Face config.json of a Mistral text model")
    ap.add_argument("out", type=Path, help="folder to write")
    ap.add_argument("--tokenizer", type=Path, required=True, help="folder holding tokenizer.json")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    c = json.loads(a.config.read_text())
    n_tok = tokenizer_size(a.tokenizer / "tokenizer.json")
    if n_tok != c["vocab_size"]:
        sys.exit(f"the tokenizer has {n_tok} ids but vocab_size is {c['vocab_size']}: make them equal")
    shapes = tensor_shapes(c)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, s, _ in shapes:
        n = int(np.prod(s)) * 2
        header[name] = {"dtype": "F16", "shape": list(s), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    a.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    with open(a.out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, s, norm in shapes:
            if norm:
                f.write(np.ones(s, np.float16).tobytes())
                continue
            rows = max(1, (1 << 22) // s[1])  # ~4M values per slice
            for r in range(0, s[0], rows):
                part = rng.random((min(rows, s[0] - r), s[1]), dtype=np.float32) * 0.04 - 0.02
                f.write(part.astype(np.float16).tobytes())
    (a.out / "config.json").write_text(json.dumps(c, indent=2) + "\n")
    for extra in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        if (a.tokenizer / extra).is_file():
            shutil.copy(a.tokenizer / extra, a.out / extra)
    params = sum(int(np.prod(s)) for _, s, _ in shapes)
    print(f"wrote {a.out}: {params / 1e9:.2f} B parameters, {offset / 1e9:.2f} GB f16", file=sys.stderr)


if __name__ == "__main__":
    main()
