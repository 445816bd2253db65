#!/usr/bin/env python3
"""Builds the tiny LLM fixtures for kiln's golden tests of its Mistral-family text models.

Random-weight transformers models, written with save_pretrained in f32 safetensors, under
tests/fixtures/llm/:
  mistral-gqa/  MistralForCausalLM: hidden 64, 4 heads, 2 KV heads, head_dim 24 (!= 64/4, so q projects
                to 96), 2 layers, intermediate 112, vocab 384, rope_theta 1e6, rms_norm_eps 1e-5, no
                sliding window, untied lm_head. Saved SHARDED (max_shard_size 200KB) with
                model.safetensors.index.json.
  mistral-swa/  MistralForCausalLM: sliding_window 6 (shorter than the 20-token prompt and the 52-token
                generated sequence), tied embeddings (the file has no lm_head.weight), hidden 64, 4 heads /
                1 KV head, head_dim 16 = 64/4, 3 layers, intermediate 128, vocab 320, rope_theta 1e4.
                transformers' sliding window: query i attends to keys j with i - 6 < j <= i (6 keys with
                itself); checked here: changing token 0 changes no logits at positions >= 16 (3 layers x 5).
  llama/        LlamaForCausalLM (model_type "llama"): hidden 64, 4 heads / 4 KV heads (no GQA), head_dim 16,
                2 layers, intermediate 96, vocab 256, rope_theta 5e5, rms_norm_eps 1e-6, untied.
  mistral3/     Mistral3ForConditionalGeneration (model_type "mistral3") as transformers writes it: a small
                mistral text_config (hidden 64, 4 heads / 2 KV heads, head_dim 32, 2 layers, intermediate
                128, vocab 256, rope_theta 1e9, untied) and a tiny pixtral vision_config (hidden 32, 1 layer,
                2 heads, head_dim 16, intermediate 64, patch 14, image_size 56), spatial_merge_size 2,
                image_token_index 10. The golden is the TEXT-ONLY path (no image token in input_ids nor
                in greedy_ids: no 10 [IMG], 12 [IMG_BREAK], 13 [IMG_END]), so kiln can load the text model
                out of this folder. transformers writes the hub layout: language_model.model.*,
                language_model.lm_head.weight, vision_tower.*, multi_modal_projector.*.
All weights are randomised (see randomise()) so attention is far from uniform and logits differ clearly.

Each folder has golden.safetensors:
  input_ids       I64 [20]       prompt ids (random, deterministic, all >= 20 so no control/image ids)
  logits          F32 [20, V]    full forward pass over input_ids (no cache)
  greedy_ids      I64 [32]       32 greedy tokens continuing input_ids (generate(), do_sample=False, KV cache,
                                 no eos stopping: eos_token_id None; a hand-written cache loop agrees)
  greedy_logits   F32 [32, V]    the logits each greedy step chose from: row i = logits at position 20 + i - 1
                                 of input_ids ++ greedy_ids (row 0 equals logits[19]); float64 cache-free
                                 recomputation, equal to the cache loop's within 1e-9
mistral-gqa's also has (a session continuing a conversation: prefill input_ids, then prefill input_ids_b
into the same cache):
  input_ids_b     I64 [7]        continuation ids
  logits_cont     F32 [27, V]    full forward pass over input_ids ++ input_ids_b (rows 20.. are what the
                                 second prefill yields; rows ..19 equal logits)
All goldens are computed in float64 (model.double(), SDPA attention (eager attention takes its softmax in float32), and RoPE's cos/sin recomputed in
float64: transformers makes them in float32 even for a float64 model) from the saved f32 weights as loaded
back with from_pretrained, then stored as f32. The greedy steps are checked against a cache-free float64
recomputation, and every greedy step's top-2 logit gap is > MIN_GAP (the seed is advanced until it is); the
minimum gaps are printed and written to tests/fixtures/llm/README.md.

Usage: /work/venv/bin/python tools/make_llm_fixtures.py  (from anywhere; a few seconds)
"""
import json
import os
import shutil

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "llm")
PROMPT_LEN = 20
CONT_LEN = 7
GEN_LEN = 32
MIN_GAP = 1e-2  # stricter than needed for f64-vs-f32 agreement, so f32 kernels reproduce the greedy path


def randomise(model, seed):
    """transformers' init (std 0.02, unit norms) gives near-uniform attention and tiny logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif p.dim() == 2:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:  # conv kernels (pixtral patch_conv)
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


def rope_in_float64(model):
    """transformers computes the RoPE angles, cos and sin in float32 whatever the model's dtype (and
    inv_freq was made in float32); for a float64 golden, recompute them in float64. (Left alone, the
    cached and uncached paths also disagree by ~1e-6: float32 cos of one position vs of many.)"""
    import types

    text = model.config.get_text_config()
    theta = text.rope_parameters["rope_theta"]
    assert text.rope_parameters.get("rope_type", "default") == "default"
    d = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))

    def forward(self, x, position_ids):
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)

    n = 0
    for name, mod in model.named_modules():
        if type(mod).__name__.endswith("RotaryEmbedding") and "Pixtral" not in type(mod).__name__:
            assert torch.allclose(mod.inv_freq.double(), inv_freq, rtol=1e-6), name
            assert mod.attention_scaling == 1.0
            mod.forward = types.MethodType(forward, mod)
            n += 1
    assert n == 1, n


def make_ids(seed, n, vocab):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(20, vocab, (n,), generator=g)


def tensor_names(folder):
    names = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors") and f != "golden.safetensors":
            with safe_open(os.path.join(folder, f), "pt") as h:
                for k in h.keys():
                    names[k] = (f, list(h.get_slice(k).get_shape()), str(h.get_slice(k).get_dtype()))
    return names


@torch.no_grad()
def greedy(model, ids, vocab):
    """Greedy decoding in float64 three ways that must agree: generate() (its ids; it rounds the logits it
    returns to f32), a hand-written KV-cache loop (one token per forward), and cache-free recomputation of
    the whole sequence, whose float64 logits are the golden."""
    out = model.generate(
        ids[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=GEN_LEN,
        min_new_tokens=GEN_LEN, do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=True,
    )
    gen = out[0, len(ids):]
    assert len(gen) == GEN_LEN, len(gen)
    step = model(input_ids=ids[None], use_cache=True)
    cache, rows, toks = step.past_key_values, [step.logits[0, -1]], []
    for _ in range(GEN_LEN - 1):
        toks.append(int(rows[-1].argmax()))
        step = model(input_ids=torch.tensor([[toks[-1]]]), past_key_values=cache, use_cache=True)
        cache = step.past_key_values
        rows.append(step.logits[0, -1])
    toks.append(int(rows[-1].argmax()))
    cached = torch.stack(rows)
    full = model(input_ids=out[:, :-1]).logits[0, len(ids) - 1:]  # no cache
    assert full.shape == cached.shape, (full.shape, cached.shape)
    err = (full - cached).abs().max().item()
    assert err < 1e-9, f"cached vs full recomputation differ by {err}"
    assert torch.equal(full.argmax(-1), gen), "generate()'s ids are not the argmax of the recomputed logits"
    assert toks == gen.tolist(), "the cache loop and generate() disagree"
    top2 = full.topk(2, dim=-1).values
    gaps = top2[:, 0] - top2[:, 1]
    return gen, full, float(gaps.min())


def build(name, cls, config, seed, extra=None, save_kwargs=None, avoid=()):
    """Tries seeds from `seed` on until every greedy step's top-2 gap is > MIN_GAP (and no greedy id is in
    `avoid`)."""
    from transformers import AutoConfig

    folder = os.path.join(OUT, name)
    for attempt in range(50):
        s = seed + 100 * attempt
        torch.manual_seed(s)
        model = cls(config).eval()
        randomise(model, s + 1)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.makedirs(folder)
        model.save_pretrained(folder, **(save_kwargs or {}))
        # Goldens from what was written, loaded back, in float64.
        m = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
        sd_saved, sd_mem = m.state_dict(), model.state_dict()
        for k, v in sd_mem.items():
            assert torch.equal(sd_saved[k], v), f"{k} did not round-trip"
        m = m.double()
        rope_in_float64(m)
        m.generation_config.eos_token_id = None
        vocab = config.get_text_config().vocab_size
        ids = make_ids(s + 2, PROMPT_LEN, vocab)
        with torch.no_grad():
            logits = m(input_ids=ids[None]).logits[0]
        gen, step_logits, gap = greedy(m, ids, vocab)
        if gap <= MIN_GAP:
            print(f"{name}: seed {s} has a greedy top-2 gap of {gap:.2e}, trying the next")
            continue
        if set(gen.tolist()) & set(avoid):
            print(f"{name}: seed {s} generates one of {avoid}, trying the next")
            continue
        assert torch.allclose(step_logits[0], logits[-1], atol=1e-9)
        golden = {
            "input_ids": ids.to(torch.int64),
            "logits": logits.float(),
            "greedy_ids": gen.to(torch.int64),
            "greedy_logits": step_logits.float(),
        }
        info = {"seed": s, "min_greedy_top2_gap": gap, "logits_std": float(logits.std()),
                "prompt_top2_gap_min": float((lambda t: (t[:, 0] - t[:, 1]).min())(logits.topk(2, -1).values))}
        if extra:
            extra(m, ids, golden, info, s)
        save_file(golden, os.path.join(folder, "golden.safetensors"))
        saved_config = AutoConfig.from_pretrained(folder)
        info["names"] = tensor_names(folder)
        info["files"] = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
        info["config"] = json.load(open(os.path.join(folder, "config.json")))
        assert saved_config.model_type == config.model_type
        return info
    raise RuntimeError(f"{name}: no seed with all greedy top-2 gaps > {MIN_GAP}")


def continuation(m, ids, golden, info, s):
    cont = make_ids(s + 3, CONT_LEN, m.config.vocab_size)
    with torch.no_grad():
        full = m(input_ids=torch.cat([ids, cont])[None]).logits[0]
        # The same through a cache, as a session would run it: prefill ids, then prefill cont.
        first = m(input_ids=ids[None], use_cache=True)
        second = m(input_ids=cont[None], past_key_values=first.past_key_values, use_cache=True).logits[0]
    assert (second - full[PROMPT_LEN:]).abs().max() < 1e-9
    assert (full[:PROMPT_LEN] - golden["logits"].double()).abs().max() < 1e-5
    golden["input_ids_b"] = cont.to(torch.int64)
    golden["logits_cont"] = full.float()
    top2 = full[PROMPT_LEN:].topk(2, -1).values
    info["cont_top2_gap_min"] = float((top2[:, 0] - top2[:, 1]).min())


def swa_check(m, ids, golden, info, s):
    """Pins transformers' sliding-window semantics: the window is 6 keys including the query, so after
    3 layers position i sees tokens i-15..i; changing token 0 must leave positions >= 16 unchanged and
    change position 15."""
    changed = ids.clone()
    changed[0] = 20 if ids[0] != 20 else 21
    with torch.no_grad():
        a = m(input_ids=ids[None]).logits[0]
        b = m(input_ids=changed[None]).logits[0]
    diff = (a - b).abs().amax(-1)
    assert diff[16:].max() < 1e-12, diff
    assert diff[15] > 1e-6, diff
    # And the window matters: without it the logits differ.
    w = m.config.sliding_window
    m.config.sliding_window = None
    for layer in m.model.layers:
        if hasattr(layer.self_attn, "sliding_window"):
            layer.self_attn.sliding_window = None
    with torch.no_grad():
        c = m(input_ids=ids[None]).logits[0]
    m.config.sliding_window = w
    for layer in m.model.layers:
        if hasattr(layer.self_attn, "sliding_window"):
            layer.self_attn.sliding_window = w
    info["no_window_max_logit_change"] = float((a - c).abs().max())
    assert info["no_window_max_logit_change"] > 1e-3
    assert (a[:6] - c[:6]).abs().max() < 1e-12  # the first 6 positions never reach past the window


def main():
    torch.set_num_threads(1)
    from transformers import (LlamaConfig, LlamaForCausalLM, Mistral3Config, Mistral3ForConditionalGeneration,
                              MistralConfig, MistralForCausalLM, PixtralVisionConfig)

    os.makedirs(OUT, exist_ok=True)
    results = {}

    gqa = MistralConfig(
        vocab_size=384, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=24, max_position_embeddings=512, rope_theta=1e6, rms_norm_eps=1e-5,
        sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=None,
    )
    results["mistral-gqa"] = build("mistral-gqa", MistralForCausalLM, gqa, 1000, extra=continuation,
                                   save_kwargs={"max_shard_size": "200KB"})
    assert "model.safetensors.index.json" in results["mistral-gqa"]["files"]

    swa = MistralConfig(
        vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=512, rope_theta=1e4, rms_norm_eps=1e-5,
        sliding_window=6, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=None,
    )
    results["mistral-swa"] = build("mistral-swa", MistralForCausalLM, swa, 2000, extra=swa_check)
    assert not any(k.startswith("lm_head") for k in results["mistral-swa"]["names"])

    llama = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, head_dim=16, max_position_embeddings=512, rope_theta=5e5, rms_norm_eps=1e-6,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=None,
    )
    results["llama"] = build("llama", LlamaForCausalLM, llama, 3000)

    text = MistralConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=512, rope_theta=1e9, rms_norm_eps=1e-5,
        sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=11,
    )
    vision = PixtralVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, head_dim=16,
        patch_size=14, image_size=56, num_channels=3, hidden_act="silu", rope_theta=1e4,
    )
    m3 = Mistral3Config(
        text_config=text, vision_config=vision, image_token_index=10, spatial_merge_size=2,
        projector_hidden_act="gelu", vision_feature_layer=-1, multimodal_projector_bias=False,
        tie_word_embeddings=False,
    )
    results["mistral3"] = build("mistral3", Mistral3ForConditionalGeneration, m3, 4000, avoid=(10, 12, 13))
    assert any(k.endswith("lm_head.weight") for k in results["mistral3"]["names"])

    write_readme(results)
    for name, info in results.items():
        print(name, {k: v for k, v in info.items() if k not in ("names", "config")})


def write_readme(results):
    import transformers

    lines = [
        "# Tiny LLM fixtures", "",
        "Written by `tools/make_llm_fixtures.py` (its docstring documents every file and golden tensor);",
        "regenerate with `/work/venv/bin/python tools/make_llm_fixtures.py`. Random weights, f32 safetensors",
        "as transformers' save_pretrained writes them; goldens computed in float64 from the saved weights",
        f"(transformers {transformers.__version__}, torch {torch.__version__}).", "",
        "Note for mistral3/: transformers writes the hub layout: the text model under `language_model.model.`,",
        "its head as `language_model.lm_head.weight`, then `vision_tower.` and `multi_modal_projector.`.", "",
    ]
    for name, info in results.items():
        lines.append(f"## {name}")
        lines.append(f"seed {info['seed']}; minimum top-2 logit gap over the 32 greedy steps: "
                     f"{info['min_greedy_top2_gap']:.4f}; std of the prompt logits {info['logits_std']:.2f}")
        for k in ("cont_top2_gap_min", "no_window_max_logit_change"):
            if k in info:
                lines.append(f"{k}: {info[k]:.4f}")
        lines.append("")
        lines.append("Files: " + ", ".join(f"{f} ({n} B)" for f, n in info["files"].items()))
        lines.append("")
        lines.append("Tensors (name, file, shape, dtype):")
        lines.append("")
        for k, (f, shape, dt) in sorted(info["names"].items()):
            lines.append(f"    {k}  {f}  {shape}  {dt}")
        lines.append("")
    path = os.path.join(OUT, "README.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
