#!/usr/bin/env python3
"""Builds tests/fixtures/llm/mistral3-vision/: a tiny random Mistral3ForConditionalGeneration (Pixtral
vision tower + projector + Mistral text model) with a V7 Tekken tokenizer, and golden outputs of
mistral-common (prompt ids and pixel values) and transformers (vision features, projected features,
logits, greedy tokens) for prompts with images.

Model: text hidden 64, 4 heads / 2 KV heads, head_dim 32, 2 layers, intermediate 128, rope_theta 1e9,
untied head; vocab 1500 = 1000 control tokens + the first 500 byte-level ranks of
tests/fixtures/llm/tokenizer/tekken.json. Vision: hidden 32, 3 layers (llama.cpp's converter maps projector tensors by block index, so fewer
than 3 layers cannot be converted), 2 heads of 16, intermediate 64,
patch 14, image_size 112 (8 patches per side), silu; spatial_merge_size 2, projector gelu, no bias.
tekken.json gains an "image" section (patch 14, max_image_size 112, merge 2) so mistral-common encodes
images; its ImageEncoder gives the prompt ids and the pixel values the golden uses.
The LM head's rows for control ids (< 1000) are zero, so greedy tokens are ordinary text.

Cases (each a chat through mistral-common's V7 encoding, images as PNG data URLs):
  one      one 70x130 image (odd aspect ratio: 3 x 4 tokens after resizing to 84x112)
  two      two images in one message: 37x23 (upscaled, 1 x 2 tokens) and 300x200 (larger than
           max_image_size: 112x75 -> 3 x 4 tokens)
  turns    an image in the first user turn, an assistant reply, then another image and text
text-f32.gguf and mmproj-f32.gguf: the same model through llama.cpp's convert_hf_to_gguf.py (text
model; --mmproj: vision tower + projector), for `--mmproj`.
golden.safetensors per case <case>.*: input_ids I64 [L]; pixels_<k> F32 [3, H, W] (mistral-common);
features_<k> F32 [n_patches, 32] (the vision tower's last hidden state); projected_<k> F32
[tokens, 64]; logits F32 [4, 1500] (the prompt's last 4 rows, whole prompt run without a cache); greedy I64 [16] (generate, greedy).
Goldens computed in float64 from the f32 weights.

Usage: /tmp/venv-vis/bin/python tools/make_vision_fixtures.py
  (a venv with torch, transformers>=5, mistral-common, opencv-python-headless, pillow)
"""
import base64
import io
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from mistral_common.protocol.instruct.messages import (
    AssistantMessage, ImageURLChunk, TextChunk, UserMessage)
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from transformers import Mistral3Config, Mistral3ForConditionalGeneration

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "llm", "mistral3-vision")
SPECIALS = 1000
RANKS = 500
VOCAB = SPECIALS + RANKS
GEN = 16
LOGIT_ROWS = 4
MIN_GAP = 1e-3  # every greedy step's top-2 gap, so f32 kernels follow the f64 path


def tokenizer_file():
    src = json.load(open(os.path.join(ROOT, "tests", "fixtures", "llm", "tokenizer", "tekken.json")))
    src["vocab"] = src["vocab"][:RANKS]
    src["config"]["num_vocab_tokens"] = RANKS
    src["config"]["default_vocab_size"] = VOCAB
    src["image"] = {"image_patch_size": 14, "max_image_size": 112, "spatial_merge_size": 2}
    path = os.path.join(OUT, "tekken.json")
    with open(path, "w") as f:
        json.dump(src, f, ensure_ascii=False)
    return path


def image(w, h, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: resizing matters, and the encoder sees structure.
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 / max(w - 1, 1)), (y * 255 / max(h - 1, 1)), ((x + y) * 127 / max(w + h - 2, 1))], -1)
    # Noise in 4x4 blocks: structure at the patch scale, and PNGs that stay small.
    noise = rng.normal(0, 30, ((h + 3) // 4, (w + 3) // 4, 3)).repeat(4, 0).repeat(4, 1)[:h, :w]
    px = np.clip(base + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(px, "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    name = f"image_{w}x{h}.png"
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(buf.getvalue())
    return name, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif p.dim() == 2:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:  # the patch convolution
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
        model.lm_head.weight[:SPECIALS] = 0.0


def rope_in_float64(model):
    """The text model's RoPE in float64 (transformers makes cos/sin in float32 for any dtype)."""
    import types
    text = model.config.get_text_config()
    theta = text.rope_parameters["rope_theta"]
    d = text.head_dim
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))

    def forward(self, x, position_ids):
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    for name, mod in model.named_modules():
        if type(mod).__name__.endswith("RotaryEmbedding") and "Pixtral" not in type(mod).__name__:
            mod.forward = types.MethodType(forward, mod)


LLAMA_CPP = "/tmp/llama.cpp-build/llama_cpp_python-0.3.36/vendor/llama.cpp"


def convert_gguf():
    """llama.cpp's own converter on the saved model: the text model (text-f32.gguf) and the vision
    tower + projector (mmproj-f32.gguf, clip.projector_type pixtral). The converter looks up
    [IMG_BREAK] in tokenizer_config.json, so a temporary copy gets one listing the control tokens, and
    a preprocessor_config.json with the normalisation."""
    import shutil
    import subprocess
    import tempfile
    tmp = tempfile.mkdtemp()
    for f in ["config.json", "model.safetensors", "tekken.json"]:
        shutil.copy(os.path.join(OUT, f), tmp)
    tekken = json.load(open(os.path.join(OUT, "tekken.json")))
    decoder = {str(t["rank"]): {"content": t["token_str"], "special": True} for t in tekken["special_tokens"]}
    json.dump({"added_tokens_decoder": decoder}, open(os.path.join(tmp, "tokenizer_config.json"), "w"))
    # The mmproj writer reads the image normalisation from the processor config, as Small 3.1's has.
    json.dump({"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
               "patch_size": {"height": 14, "width": 14}, "size": {"longest_edge": 112},
               "image_processor_type": "PixtralImageProcessor"},
              open(os.path.join(tmp, "preprocessor_config.json"), "w"))
    script = os.path.join(LLAMA_CPP, "convert_hf_to_gguf.py")
    for extra, name in [([], "text-f32.gguf"), (["--mmproj"], "mmproj-f32.gguf")]:
        subprocess.run([sys.executable, script, *extra, "--outtype", "f32", tmp,
                        "--outfile", os.path.join(OUT, name)], check=True, capture_output=True)
    shutil.rmtree(tmp)


class SmallGap(Exception):
    pass


def main():
    for seed in range(7, 60):
        try:
            return build(seed)
        except SmallGap as e:
            print(f"seed {seed}: {e}; next seed")
    raise SystemExit("no seed gave clear greedy steps")


def build(seed):
    os.makedirs(OUT, exist_ok=True)
    tok_path = tokenizer_file()
    mt = MistralTokenizer.from_file(tok_path)

    config = Mistral3Config(
        text_config=dict(model_type="mistral", hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=32, num_hidden_layers=2, intermediate_size=128, vocab_size=VOCAB,
                         rope_theta=1e9, max_position_embeddings=1024, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, sliding_window=None, bos_token_id=1, eos_token_id=2,
                         pad_token_id=11),
        vision_config=dict(model_type="pixtral", hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                           head_dim=16, intermediate_size=64, patch_size=14, image_size=112, hidden_act="silu",
                           rope_theta=10000.0),
        spatial_merge_size=2, image_token_index=10, projector_hidden_act="gelu",
        multimodal_projector_bias=False, vision_feature_layer=-1, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Mistral3ForConditionalGeneration(config).eval()
    randomise(model, seed)
    model.save_pretrained(OUT, safe_serialization=True)
    model = Mistral3ForConditionalGeneration.from_pretrained(OUT, attn_implementation="eager").double().eval()
    rope_in_float64(model)

    imgs = {k: image(w, h, s) for k, (w, h, s) in
            {"a": (70, 130, 1), "b": (37, 23, 2), "c": (300, 200, 3), "d": (90, 60, 4)}.items()}
    url = lambda k: ImageURLChunk(image_url=imgs[k][1])
    cases = {
        # Text before the image: mistral-common still puts the image tokens first.
        "one": [UserMessage(content=[TextChunk(text="What is in this picture?"), url("a")])],
        "two": [UserMessage(content=[url("b"), url("c"), TextChunk(text="Compare them.")])],
        "turns": [
            UserMessage(content=[url("d"), TextChunk(text="Describe it.")]),
            AssistantMessage(content="It is a gradient."),
            UserMessage(content=[url("a"), TextChunk(text="And this one?")]),
        ],
    }
    golden, manifest = {}, {}
    for case, messages in cases.items():
        enc = mt.encode_chat_completion(ChatCompletionRequest(messages=messages))
        ids = torch.tensor(enc.tokens)
        golden[f"{case}.input_ids"] = ids
        pixels = [torch.from_numpy(np.asarray(p, dtype=np.float32)) for p in enc.images]
        sizes = [(p.shape[1], p.shape[2]) for p in pixels]
        with torch.no_grad():
            feats, projs = [], []
            for k, p in enumerate(pixels):
                golden[f"{case}.pixels_{k}"] = p.contiguous()
                out = model.model.vision_tower(p[None].double(), image_sizes=[sizes[k]], output_hidden_states=True)
                feats.append(out.last_hidden_state[0])
                proj = model.model.get_image_features(p[None].double(), image_sizes=[sizes[k]],
                                                      vision_feature_layer=-1).pooler_output[0]
                projs.append(proj)
                golden[f"{case}.features_{k}"] = feats[-1].float().contiguous()
                golden[f"{case}.projected_{k}"] = proj.float().contiguous()
            assert sum(int(t.shape[0]) for t in projs) == int((ids == 10).sum())
            hmax = max(s[0] for s in sizes); wmax = max(s[1] for s in sizes)
            batch = torch.zeros(len(pixels), 3, hmax, wmax, dtype=torch.float64)
            for k, p in enumerate(pixels):
                batch[k, :, : p.shape[1], : p.shape[2]] = p.double()
            image_sizes = torch.tensor(sizes)
            logits = model(input_ids=ids[None], pixel_values=batch, image_sizes=image_sizes).logits[0]
            # The last rows only (the text after the images sees them all): keeps the file small.
            golden[f"{case}.logits"] = logits[-LOGIT_ROWS:].float().contiguous()
            out = model.generate(input_ids=ids[None], pixel_values=batch, image_sizes=image_sizes,
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=GEN,
                                 min_new_tokens=GEN, do_sample=False, eos_token_id=None, pad_token_id=11,
                                 output_scores=True, return_dict_in_generate=True)
            gen = out.sequences[0, len(ids):]
            gaps = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
            golden[f"{case}.greedy"] = gen.clone()
            # The images matter: the same text with no image features changes the first token's logits.
            top2 = logits[-1].topk(2).values
            manifest[case] = {
                "prompt_tokens": len(ids), "image_tokens": int((ids == 10).sum()),
                "image_sizes": sizes, "greedy": gen.tolist(),
                "last_top2_gap": float(top2[0] - top2[1]), "min_greedy_gap": min(gaps),
                "images": [imgs[k][0] for k in {"one": "a", "two": "bc", "turns": "da"}[case]],
                "prompt": [m.model_dump() if not hasattr(m, "content") or isinstance(m.content, str)
                           else {"role": m.role, "content": [c.model_dump() if c.type == "text" else {"type": "image"}
                                                             for c in m.content]} for m in messages],
            }
            assert all(t >= SPECIALS for t in gen.tolist()), gen
            if min(gaps) <= MIN_GAP:
                raise SmallGap(f"case {case}: greedy top-2 gap {min(gaps):.2e}")
    save_file(golden, os.path.join(OUT, "golden.safetensors"))
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    convert_gguf()
    print("seed", seed)
    print(json.dumps({k: (v["prompt_tokens"], v["image_tokens"], v["image_sizes"], v["min_greedy_gap"]) for k, v in manifest.items()}, indent=1))


if __name__ == "__main__":
    main()
