#!/usr/bin/env python3
"""Builds the tiny CLIP text encoder fixtures for kiln's golden tests (tests/tests/clip.rs).

Two random-weight transformers CLIPTextModel's of the shapes SD uses, shrunk:
  tests/fixtures/tiny-sd1/text_encoder/  quick_gelu, like CLIP ViT-L (SD 1.x); eos_token_id 2, the
                                         legacy value in SD1's real config, so transformers pools at
                                         argmax(ids); ids padded with the EOS token.
  tests/fixtures/tiny-sd2/text_encoder/  gelu, like OpenCLIP ViT-H converted to transformers (SD 2.x /
                                         SD-Turbo); eos_token_id 500, so transformers pools at the first
                                         EOS, which here differs from argmax(ids); ids padded with 0.
Each folder gets config.json + model.safetensors (save_pretrained, f32; tiny-sd1's then renamed to the
hub layout with the `text_model.` prefix, tiny-sd2's left as transformers 5 writes it, without) and
golden.safetensors:
  input_ids          I64 [2, 77]
  last_hidden_state  F32 [2, 77, H]  transformers' last_hidden_state (clip skip 1)
  penultimate        F32 [2, 77, H]  final_layer_norm(hidden_states[-2]) (A1111 clip skip 2)
  pooled             F32 [2, H]      transformers' pooler_output
The goldens are computed in float64 from the saved f32 weights, so they carry no f32 rounding of the
reference itself.

Usage: /work/main/.venv/bin/python tools/make_clip_fixtures.py  (from the repository root)
"""
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LENGTH = 77


def randomise(model, seed):
    """transformers' init (std 0.02 embeddings, unit LayerNorms, zero biases) leaves attention nearly
    uniform and the biases and norm affines untested; larger random values exercise all of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[1]
                p.copy_(1.5 * torch.randn(p.shape, generator=g) / fan_in**0.5)


def make_ids(seed, lengths, bos, eos, pad, low, high):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        body = torch.randint(low, high, (n,), generator=g).tolist()
        # Keep special ids out of the body so each row has exactly one BOS and its EOS where placed.
        body = [t + 2 if t in (bos, eos) else t for t in body]
        row = [bos] + body + [eos]
        row += [pad] * (LENGTH - len(row))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.int64)


def hub_layout(folder):
    """transformers 5 saves CLIPTextModel's weights without the `text_model.` prefix; the SD
    checkpoints on the hub (saved by transformers 4) have it, and transformers 5 loads either."""
    path = os.path.join(folder, "model.safetensors")
    state = load_file(path)
    save_file({"text_model." + k: v for k, v in state.items()}, path, metadata={"format": "pt"})


def build(folder, seed, config, ids, prefixed):
    torch.manual_seed(seed)
    model = CLIPTextModel(config).eval()
    randomise(model, seed + 1)
    out = os.path.join(ROOT, "tests", "fixtures", folder, "text_encoder")
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if prefixed:
        hub_layout(out)
    # What was written must load back (in either layout) to the same model.
    reloaded = CLIPTextModel.from_pretrained(out).eval()
    for name, p in model.state_dict().items():
        assert torch.equal(p, reloaded.state_dict()[name]), name

    reference = model.double()
    with torch.no_grad():
        o = reference(input_ids=ids, output_hidden_states=True)
        penultimate = reference.final_layer_norm(o.hidden_states[-2])
        # hidden_states = (embeddings, layer 1, ..., layer N), N+1 entries, the last before the final LN.
        assert len(o.hidden_states) == config.num_hidden_layers + 1
        assert torch.allclose(reference.final_layer_norm(o.hidden_states[-1]), o.last_hidden_state)
    golden = {
        "input_ids": ids.contiguous(),
        "last_hidden_state": o.last_hidden_state.float().contiguous(),
        "penultimate": penultimate.float().contiguous(),
        "pooled": o.pooler_output.float().contiguous(),
    }
    save_file(golden, os.path.join(out, "golden.safetensors"))
    print(out, {k: tuple(v.shape) for k, v in golden.items()})
    print("  pooled positions", o.pooler_output.shape, "argmax(ids)", ids.argmax(-1).tolist(),
          "first eos", (ids == config.eos_token_id).int().argmax(-1).tolist())


def main():
    common = dict(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        max_position_embeddings=LENGTH,
        layer_norm_eps=1e-5,
        projection_dim=32,
    )
    sd1 = CLIPTextConfig(
        **common,
        num_hidden_layers=3,
        hidden_act="quick_gelu",
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    # SD1 pads with EOS: BOS 998, EOS 999 (the largest id, like 49407), body ids below both.
    sd1_ids = make_ids(10, [5, 20], bos=998, eos=999, pad=999, low=3, high=998)
    build("tiny-sd1", 1234, sd1, sd1_ids, prefixed=True)

    sd2 = CLIPTextConfig(
        **common,
        num_hidden_layers=3,
        hidden_act="gelu",
        bos_token_id=499,
        eos_token_id=500,
        pad_token_id=0,
    )
    # SD2 pads with "!" (id 0); body ids above 500 make argmax(ids) differ from the first EOS.
    sd2_ids = make_ids(20, [7, 30], bos=499, eos=500, pad=0, low=1, high=1000)
    build("tiny-sd2", 5678, sd2, sd2_ids, prefixed=False)


if __name__ == "__main__":
    main()
