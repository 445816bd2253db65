#!/usr/bin/env python3
"""Builds tests/fixtures/llm/gguf-quant/: a tiny random Mistral whose every matrix row is a multiple of
256 values (so llama.cpp's K-quants really apply), quantised by llama.cpp's own llama-quantize to Q8_0
and Q4_K_M, and what llama.cpp itself generates from each file, so kiln's reading of those block
types (and its quantised matrix products) is checked against the reference implementation.

Model (built by make_gguf_llm_fixtures.tekken_folder: the tekken vocabulary of 1000 control tokens +
500 byte-level ranks, random weights N(0, 0.2), norms 1 + N(0, 0.2); the head's rows zero for the
control tokens and for the 153 byte tokens that are not whole UTF-8 on their own, so every greedy
step is text and llama-server reports its log-probabilities):
  MistralForCausalLM, hidden 256, intermediate 512, 2 layers, 8 heads of 32, 2 KV heads (GQA 4:1),
  rope_theta 1e6, untied head. The folder and its F32 GGUF (convert_hf_to_gguf.py --outtype f32) are
  made in a temporary directory and not kept (8 MB); the seed is recorded, so a rerun rebuilds them.
Files:
  q8_0.gguf    llama-quantize F32 -> Q8_0: every matrix Q8_0 (embedding and head too), norms F32
  q4_k_m.gguf  llama-quantize F32 -> Q4_K_M: Q4_K, with Q6_K for the head, and for attn_v and ffn_down
               in the layers llama.cpp gives more bits (here layer 1); norms F32
  llama_cpp.json:
    seed, shape: the model
    chat:       {messages, prompt, ids}: the chat template rendered and tokenized by llama-server
    transformers: {ids, gaps}: transformers' own greedy tokens on the F32 folder (float64) and its
                top-2 logit gaps
    f32:        llama-server's greedy ids on the F32 GGUF (the seed is one where they equal
                transformers' and every transformers gap >= MIN_GAP)
    files:      per file name {types, ids, top_ids, top_logprobs, gaps}:
      types     {ggml type: tensor count} read back with gguf-py (the Q4_K_M file holds Q4_K and Q6_K)
      ids       GEN greedy tokens llama-server generates from the file after the chat prompt
                (/completion, temperature 0, samplers top_k 1, EOS ignored)
      top_ids, top_logprobs: per step, the N_PROBS most likely ids and their log-probabilities as
                llama-server reports them
                (n_probs; post_sampling_probs false, so they are pre-sampling: get_token_probabilities
                takes a float32 softmax over the whole vocabulary's raw logits of that step; the log
                is taken of the float32 probability)
      exact_logprobs: the log-probabilities of top_ids in float64 with the file's weights as gguf-py
                dequantises them (transformers, fed this file's tokens: teacher forcing), so that
                llama.cpp's and kiln's distances from what the file holds can be told apart
      exact_gaps  the top-2 logit gaps of that dequantised model at those steps
      gaps      transformers' top-2 logit gaps (float64) on the F32 folder at the same steps, fed
                this file's tokens, so a near-tie there explains a divergence
llama-server runs with one thread, an F32 KV cache and flash attention off, so the only rounding
beyond f32 arithmetic is the weights' quantisation and llama.cpp's of the activations (q8_0 / q8_K
blocks in its CPU matrix products).

Usage (the venv of make_gguf_llm_fixtures.py; llama.cpp's source tree, llama-server, llama-quantize):
  /tmp/venv-vis/bin/python tools/make_gguf_quant_crosscheck.py \\
      [--llama-cpp /tmp/llama.cpp-build/llama_cpp_python-0.3.36/vendor/llama.cpp] \\
      [--bin /tmp/llama.cpp-build/build/bin]
"""
import argparse
import collections
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_gguf_llm_fixtures import (CHATS, ROOT, Server, chat_prompt, compact_json, convert,  # noqa: E402
                                    greedy_completion, tekken_folder, transformers_greedy)

OUT = os.path.join(ROOT, "tests", "fixtures", "llm", "gguf-quant")
SHAPE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
             num_key_value_heads=2, head_dim=32)
TYPES = {"q8_0.gguf": "Q8_0", "q4_k_m.gguf": "Q4_K_M"}
# The hidden-32 fixtures' N(0, 0.2) matrices scaled to these widths (0.2 * sqrt(32) / sqrt(columns)): at
# N(0, 0.2) a 256-wide model saturates its attention and turns chaotic (Q8_0 rounding alone changed
# its second greedy token), which would check nothing about the block types.
GAIN = 0.2 * 32 ** 0.5
GEN = 32
N_PROBS = 8
MIN_GAP = 0.01
SERVER_ARGS = ["-ctk", "f32", "-ctv", "f32", "-fa", "off"]


def tensor_types(path):
    from gguf import GGUFReader
    return dict(sorted(collections.Counter(t.tensor_type.name for t in GGUFReader(path).tensors).items()))


HF_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
            "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def dequantised(model, path):
    """`model` (float64) with the weights of the GGUF file `path` as gguf-py dequantises them: what the
    file holds, computed without llama.cpp's or kiln's rounding of activations."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    heads = {"attn_q": SHAPE["num_attention_heads"], "attn_k": SHAPE["num_key_value_heads"]}
    state = {}
    for t in GGUFReader(path).tensors:
        w = torch.from_numpy(dequantize(t.data, t.tensor_type).copy()).double()
        parts = t.name.split(".")
        if parts[0] == "blk":
            kind = parts[2]
            if kind in heads:
                # Undo the converter's per-head interleaving of Q/K rows (LlamaModel.permute).
                n = heads[kind]
                w = w.reshape(n, w.shape[0] // n // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
            name = f"model.layers.{parts[1]}.{HF_NAMES[kind]}.weight"
        else:
            name = {"token_embd": "model.embed_tokens.weight", "output_norm": "model.norm.weight",
                    "output": "lm_head.weight"}[parts[0]]
        state[name] = w
    model = copy.deepcopy(model)
    model.load_state_dict(state, strict=True)
    return model


def forced_logprobs(model, prompt, ids):
    """transformers' log-probabilities at each generated step, fed `ids` after `prompt`."""
    seq = torch.tensor([prompt + ids])
    with torch.no_grad():
        logits = model(input_ids=seq).logits[0, len(prompt) - 1:len(prompt) - 1 + len(ids)]
    return logits.log_softmax(dim=-1)


def gaps(logprobs):
    top = logprobs.topk(2, dim=-1).values
    return [float(g) for g in top[:, 0] - top[:, 1]]


def llama_cpp_greedy(server_bin, gguf, prompt=None):
    """(chat, completion) from llama-server on `gguf`: the first chat's prompt unless `prompt` given."""
    server = Server(server_bin, gguf, False, extra=SERVER_ARGS)
    try:
        chat = chat_prompt(server, CHATS[0])
        done = greedy_completion(server, prompt or chat["ids"], GEN, N_PROBS)
    finally:
        server.close()
    return chat, done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", default="/tmp/llama.cpp-build/llama_cpp_python-0.3.36/vendor/llama.cpp")
    ap.add_argument("--bin", default="/tmp/llama.cpp-build/build/bin")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.llama_cpp, "gguf-py"))
    from transformers import MistralForCausalLM
    server_bin = os.path.join(args.bin, "llama-server")
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp()
    try:
        folder, f32 = os.path.join(tmp, "hf"), os.path.join(tmp, "f32.gguf")
        # A seed whose greedy steps are clear in float64 and on which llama.cpp's F32 run agrees with
        # transformers: what the quantised files then give differs from it by their rounding alone.
        for seed in range(11, 60):
            if os.path.isdir(folder):
                shutil.rmtree(folder)
            tekken_folder(folder, seed, text_only=True, gain=GAIN, **SHAPE)
            convert(args.llama_cpp, folder, f32, "f32")
            chat, done = llama_cpp_greedy(server_bin, f32)
            hf_ids, hf_gaps = transformers_greedy(folder, MistralForCausalLM, chat["ids"], GEN)
            if done["tokens"] == hf_ids and min(hf_gaps) >= MIN_GAP:
                break
            print(f"seed {seed}: min gap {min(hf_gaps):.4f}, agree {done['tokens'] == hf_ids}; next seed")
        else:
            raise SystemExit("no seed gave clear greedy steps")
        record = {"seed": seed, "shape": SHAPE, "chat": chat,
                  "transformers": {"ids": hf_ids, "gaps": hf_gaps}, "f32": {"ids": done["tokens"]}, "files": {}}
        model = MistralForCausalLM.from_pretrained(folder, attn_implementation="eager").double().eval()
        for name, ftype in TYPES.items():
            path = os.path.join(OUT, name)
            subprocess.run([os.path.join(args.bin, "llama-quantize"), f32, path, ftype, "1"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            types = tensor_types(path)
            if ftype == "Q4_K_M" and not {"Q4_K", "Q6_K"} <= types.keys():
                raise SystemExit(f"{name} holds {types}, not Q4_K and Q6_K")
            _, done = llama_cpp_greedy(server_bin, path, chat["ids"])
            ids = done["tokens"]
            steps = done["completion_probabilities"]
            assert [s["id"] for s in steps] == ids
            top_ids = [[p["id"] for p in s["top_logprobs"]] for s in steps]
            exact = forced_logprobs(dequantised(model, path), chat["ids"], ids)
            record["files"][name] = {"types": types, "ids": ids, "top_ids": top_ids,
                                     "top_logprobs": [[p["logprob"] for p in s["top_logprobs"]] for s in steps],
                                     "exact_logprobs": [[float(exact[i, t]) for t in top]
                                                        for i, top in enumerate(top_ids)],
                                     "exact_gaps": gaps(exact),
                                     "gaps": gaps(forced_logprobs(model, chat["ids"], ids))}
    finally:
        shutil.rmtree(tmp)
    with open(os.path.join(OUT, "llama_cpp.json"), "w") as f:
        f.write(compact_json(record) + "\n")
    print(f"seed {seed}; transformers {hf_ids} (min gap {min(hf_gaps):.4f})")
    for name, r in record["files"].items():
        same = next((i for i, (a, b) in enumerate(zip(r["ids"], hf_ids)) if a != b), None)
        print(f"{name} {r['types']}: {r['ids']} (first step differing from F32: {same}); "
              f"{os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()
