"""Cross-checks `kiln quantize --type q4_k_m|q6_k|q8_0` (GGUF output) against llama.cpp itself.

For two random decoders whose rows are all whole 256-weight blocks (hidden 256, intermediate 512,
8 layers so Q4_K_M's use_more_bits layers 0, 3, 6, 7 differ from the others, GQA 4/2 of head_dim
64):
  tekken  MistralForCausalLM, untied head, the 1500-id Tekken vocabulary of
          tests/fixtures/llm/gguf/tekken (make_gguf_llm_fixtures.py's tekken_folder)
  spm     LlamaForCausalLM, tied embeddings (no `output`: token_embd takes the head's type), the
          512-piece SentencePiece tokenizer of make_gguf_llm_fixtures.py's spm_folder
each folder is
  1. converted by llama.cpp's convert_hf_to_gguf.py --outtype f32, then `llama-quantize` to
     Q4_K_M, Q6_K and Q8_0 (llama.cpp's files),
  2. written by `kiln quantize -m FOLDER -o OUT.gguf --type q4_k_m|q6_k|q8_0` (kiln's files),
and the script checks, per type: the same tensor names, each tensor's ggml type and bytes
identical; every metadata key of llama.cpp's file (but general.name / general.size_label, which
kiln does not write) equal in kiln's; the data sections (after the headers) byte-identical; whether
the whole files are (reported, not required: the two labels are missing); and `llama-simple` (greedy) generating the same 24 tokens
from kiln's file as from llama.cpp's.

Result (llama.cpp 0c1e57098bba, llama-cpp-python 0.3.36's tree built by tools/build-llama-cpp.sh;
run 2026-12-07 on the CPU): ALL MATCH.
  tekken q4_k_m  F32 17/17, Q4_K 49/49, Q6_K 9/9 tensors byte-identical (Q6_K: output, attn_v and
                 ffn_down of layers 0, 3, 6, 7); q6_k: F32 17/17, Q6_K 58/58; q8_0: F32 17/17,
                 Q8_0 58/58
  spm    q4_k_m  F32 17/17, Q4_K 48/48, Q6_K 9/9 (the tied token_embd is Q6_K); q6_k: F32 17/17,
                 Q6_K 57/57; q8_0: F32 17/17, Q8_0 57/57
  every type: all of llama.cpp's metadata keys but the two labels equal, no extra keys; the data
  sections (tensor order, offsets, padding, bytes) identical, so the files differ only in the
  header, by general.name / general.size_label; llama-simple's 24 greedy tokens from
  kiln's file equal those from llama.cpp's (and differ between types, so the check has teeth).

Usage: /tmp/venv-vis/bin/python tools/check_kiln_quantize.py [--kiln target/debug/kiln]
    [--llama-cpp /tmp/llama.cpp-build/llama_cpp_python-0.3.36/vendor/llama.cpp]
    [--bin /tmp/llama.cpp-build/build/bin]
(the venv needs torch, transformers>=5, mistral-common, sentencepiece and llama.cpp's gguf-py.)
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from gguf import GGUFReader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_gguf_llm_fixtures as fx  # noqa: E402

ROOT = fx.ROOT
TYPES = [("q4_k_m", "Q4_K_M"), ("q6_k", "Q6_K"), ("q8_0", "Q8_0")]
DIMS = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, max_position_embeddings=512)
PROMPT = "Hello, how are you? The quick brown fox"
N_GEN = 24


def tekken_folder(path):
    from transformers import MistralConfig, MistralForCausalLM
    fx.tekken_folder(path, 7)  # the tokenizer; the model is replaced below
    config = MistralConfig(vocab_size=fx.SPECIALS + fx.RANKS, rope_theta=1e6, rms_norm_eps=1e-5,
                           tie_word_embeddings=False, sliding_window=None, bos_token_id=1, eos_token_id=2,
                           pad_token_id=11, **DIMS)
    torch.manual_seed(0)
    model = MistralForCausalLM(config).eval()
    fx.randomise(model, 7, zero_controls=fx.SPECIALS)
    model.save_pretrained(path, safe_serialization=True)


def spm_folder(path):
    from transformers import LlamaConfig, LlamaForCausalLM
    fx.spm_folder(path, 8)
    config = LlamaConfig(vocab_size=fx.VOCAB_SPM, rope_theta=1e4, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, **DIMS)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    fx.randomise(model, 8)
    model.save_pretrained(path, safe_serialization=True)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def fields(reader):
    out = {}
    for k, f in reader.fields.items():
        if k.startswith("GGUF."):
            continue
        out[k] = (tuple(t.name for t in f.types), [bytes(f.parts[i]) for i in f.data])
    return out


def generate(binary, gguf):
    r = run([binary, "-m", gguf, "-n", str(N_GEN), PROMPT])
    return r.stdout


def compare(name, ty, llama_path, kiln_path, bins):
    want, got = GGUFReader(llama_path), GGUFReader(kiln_path)
    wt = {t.name: t for t in want.tensors}
    gt = {t.name: t for t in got.tensors}
    problems = []
    if sorted(wt) != sorted(gt):
        problems.append(f"tensor names differ: {sorted(set(wt) ^ set(gt))}")
    by_type = {}
    for n, t in wt.items():
        g = gt.get(n)
        if g is None:
            continue
        same = g.tensor_type == t.tensor_type and np.array_equal(np.asarray(g.data).view(np.uint8),
                                                                  np.asarray(t.data).view(np.uint8))
        key = t.tensor_type.name
        ok, total = by_type.get(key, (0, 0))
        by_type[key] = (ok + same, total + 1)
        if not same:
            problems.append(f"{n}: llama.cpp {t.tensor_type.name}, kiln {g.tensor_type.name}, bytes differ")
    wf, gf = fields(want), fields(got)
    for k, v in wf.items():
        if k in ("general.name", "general.size_label"):
            continue
        if gf.get(k) != v:
            problems.append(f"metadata {k} differs")
    extra = sorted(set(gf) - set(wf))
    if extra:
        problems.append(f"kiln writes keys llama.cpp does not: {extra}")
    identical = open(llama_path, "rb").read() == open(kiln_path, "rb").read()
    # Past the header: the same tensors in the same order at the same relative offsets.
    order = [t.name for t in want.tensors] == [t.name for t in got.tensors]
    data_w = open(llama_path, "rb").read()[want.tensors[0].data_offset:]
    data_g = open(kiln_path, "rb").read()[got.tensors[0].data_offset:]
    if not (order and data_w == data_g):
        problems.append(f"tensor order equal: {order}; data sections equal: {data_w == data_g}")
    gen_llama = generate(os.path.join(bins, "llama-simple"), llama_path)
    gen_kiln = generate(os.path.join(bins, "llama-simple"), kiln_path)
    if gen_llama != gen_kiln:
        problems.append(f"greedy text differs:\n  llama.cpp file: {gen_llama!r}\n  kiln file:      {gen_kiln!r}")
    types = ", ".join(f"{k} {ok}/{total}" for k, (ok, total) in sorted(by_type.items()))
    print(f"{name} {ty}: tensors identical per type: {types}; metadata keys equal: "
          f"{not any(p.startswith('metadata') for p in problems)}; data section (tensor order, offsets, bytes) "
          f"identical: {order and data_w == data_g}; whole file identical: {identical}; "
          f"greedy {N_GEN} tokens equal: {gen_llama == gen_kiln}")
    print(f"    llama-simple on both: {gen_llama.strip()[-160:]!r}")
    for p in problems:
        print("   ", p)
    return not problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "debug", "kiln"))
    ap.add_argument("--llama-cpp", default="/tmp/llama.cpp-build/llama_cpp_python-0.3.36/vendor/llama.cpp")
    ap.add_argument("--bin", default="/tmp/llama.cpp-build/build/bin")
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in [("tekken", tekken_folder), ("spm", spm_folder)]:
            folder = os.path.join(tmp, name)
            make(folder)
            f32 = os.path.join(tmp, f"{name}-f32.gguf")
            fx.convert(args.llama_cpp, folder, f32, "f32")
            for ty, llama_ty in TYPES:
                llama_out = os.path.join(tmp, f"{name}-llama-{ty}.gguf")
                kiln_out = os.path.join(tmp, f"{name}-kiln-{ty}.gguf")
                run([os.path.join(args.bin, "llama-quantize"), f32, llama_out, llama_ty, "1"])
                run([args.kiln, "quantize", "-m", folder, "-o", kiln_out, "--type", ty])
                ok &= compare(name, ty, llama_out, kiln_out, args.bin)
    print("ALL MATCH" if ok else "MISMATCHES (see above)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
