#!/usr/bin/env python3
"""Small random LoRAs for the tiny SDXL pipeline (tests/fixtures/tiny-sdxl) in the formats SDXL
LoRAs come in, and diffusers' generations with them, for tests/tests/sdxl_lora.rs.

Writes tests/fixtures/tiny-sdxl/loras/:
  kohya.safetensors   kohya's SDXL keys, written here by hand: `lora_te1_*` (CLIP-L, text_encoder),
                      `lora_te2_*` (bigG, text_encoder_2) and `lora_unet_*` in the original (SGM)
                      UNet's names that kohya's SDXL trainer uses (`input_blocks_4_1_...`,
                      `middle_block_1_...`, `output_blocks_...`); rank 4, alpha 2, on the
                      attention / feed-forward / projection Linears and the resnets' emb_layers_1.
  peft.safetensors    diffusers / PEFT keys (`unet.*.lora_A.weight`, `text_encoder.*`,
                      `text_encoder_2.*`): peft LoraConfig(r=4, lora_alpha=8) on the same Linears,
                      saved by StableDiffusionXLPipeline.save_lora_weights with the adapter
                      metadata (alpha).
  locon.safetensors   LyCORIS LoCon in kohya's SGM keys: 3x3 `lora_down` / 1x1 `lora_up` on the
                      resnets' in_layers_2 / out_layers_3, the 1x1 skip_connection, the
                      downsampler's `op` and the upsampler's conv, plus proj_in (rank 2, alpha 1).
and lora_golden.safetensors + lora_cases.json (with each file's A1111 `addnet` hash) in
tests/fixtures/tiny-sdxl: per case, `<case>/image` F32 [1, H, W, 3] (output_type="np") of
StableDiffusionXLPipeline (Euler, 4 steps, 32x32, float32 on the CPU,
torch.Generator("cpu").manual_seed(42)) after pipe.load_lora_weights(file, adapter_name=stem) and
pipe.set_adapters(names, adapter_weights=...) (a dict {"text_encoder": a, "text_encoder_2": a,
"unet": b} for A1111's <lora:name:te:unet>, whose text-encoder weight applies to both encoders);
`none/image` is the same generation without adapters. Each case's kiln prompt carries the
<lora:...> tags; diffusers gets the prompts without them.

Usage: /tmp/venv-vis/bin/python tools/make_sdxl_lora_fixtures.py  (from anywhere; after
tools/make_sdxl_fixtures.py has written the pipeline folder)
"""
import hashlib
import json
import os
import re

import numpy as np
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
import transformers.integrations.peft as transformers_peft

# As in make_lora_fixtures.py: transformers 5 asks for a peft newer than PyPI has; its adapter
# loading works with 0.21 for these plain LoRA Linears.
transformers_peft.check_peft_version = lambda min_version: None

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FX = os.path.join(ROOT, "tests", "fixtures", "tiny-sdxl")
OUT = os.path.join(FX, "loras")

UNET_LINEARS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TE_LINEARS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry, dark"

CASES = [
    dict(name="kohya_w1", prompt=PROMPT + " <lora:kohya:1.0>", loras={"kohya": 1.0}),
    dict(name="kohya_w05", prompt=PROMPT + " <lora:kohya:0.5>", loras={"kohya": 0.5}),
    dict(name="peft_w1", prompt="<lora:peft>" + PROMPT, loras={"peft": 1.0}),
    dict(name="locon_w1", prompt=PROMPT + " <lora:locon:1>", loras={"locon": 1.0}),
    # Two at once, one tag in the negative prompt (A1111 reads both).
    dict(name="peft_kohya", prompt=PROMPT + " <lora:peft:0.5>", negative="blurry <lora:kohya:1>",
         loras={"peft": 0.5, "kohya": 1.0}),
    # A1111's positional text-encoder / UNet weights: the first weighs both text encoders.
    dict(name="kohya_te02_unet1", prompt=PROMPT + " <lora:kohya:0.2:1.0>",
         loras={"kohya": {"text_encoder": 0.2, "text_encoder_2": 0.2, "unet": 1.0}}),
]

# The original UNet's names of a resnet's layers (kohya's SDXL keys use them).
RESNET = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
          "conv_shortcut": "skip_connection"}


def sgm_name(name, config):
    """The original (SGM / CompVis) UNet's name of diffusers UNet module `name`: input_blocks.0 is
    conv_in, then per level its resnets (`.0`, with the level's transformer as `.1`) and its
    downsampler (`.0.op`); middle_block.0/1/2 = resnet, transformer, resnet; output_blocks hold each
    up block's resnets (`.0`), transformers (`.1`) and, on the block's last, its upsampler (`.2.conv`
    after a transformer, else `.1.conv`)."""
    per = config.layers_per_block + 1
    p = name.split(".")
    if p[0] == "mid_block":
        index = {("resnets", "0"): 0, ("attentions", "0"): 1, ("resnets", "1"): 2}[(p[1], p[2])]
        inner = RESNET[p[3]] if p[1] == "resnets" else ".".join(p[3:])
        return f"middle_block.{index}.{inner}"
    b, kind, j, rest = int(p[1]), p[2], int(p[3]), p[4:]
    inner = RESNET[rest[0]] if kind == "resnets" else ".".join(rest)
    if p[0] == "down_blocks":
        base = 1 + b * per
        if kind == "downsamplers":
            return f"input_blocks.{base + per - 1}.0.op"
        return f"input_blocks.{base + j}.{int(kind == 'attentions')}.{inner}"
    assert p[0] == "up_blocks", name
    base = b * per
    if kind == "upsamplers":
        attn = config.up_block_types[b].startswith("CrossAttn")
        return f"output_blocks.{base + per - 1}.{2 if attn else 1}.conv"
    return f"output_blocks.{base + j}.{int(kind == 'attentions')}.{inner}"


def load_pipe():
    pipe = StableDiffusionXLPipeline.from_pretrained(FX, add_watermarker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def fill(sd, g, scale):
    """Random A/B (PEFT initialises B to zero: an adapter that would change nothing)."""
    for k, v in sd.items():
        fan_in = v[0].numel()
        v.copy_(scale * torch.randn(v.shape, generator=g) / fan_in ** 0.5)


def portable(config):
    """The adapter config without this machine's model path."""
    d = config.to_dict()
    d["base_model_name_or_path"] = None
    return d


def make_peft(g):
    pipe = load_pipe()
    config_u = LoraConfig(r=4, lora_alpha=8, target_modules=UNET_LINEARS, init_lora_weights=False)
    config_t = LoraConfig(r=4, lora_alpha=8, target_modules=TE_LINEARS, init_lora_weights=False)
    pipe.unet.add_adapter(config_u)
    pipe.text_encoder.add_adapter(config_t)
    pipe.text_encoder_2.add_adapter(config_t)
    unet_sd = get_peft_model_state_dict(pipe.unet)
    te_sd = get_peft_model_state_dict(pipe.text_encoder)
    te2_sd = get_peft_model_state_dict(pipe.text_encoder_2)
    with torch.no_grad():
        for sd in (unet_sd, te_sd, te2_sd):
            fill(sd, g, 0.6)
    StableDiffusionXLPipeline.save_lora_weights(
        OUT, unet_lora_layers=unet_sd, text_encoder_lora_layers=te_sd,
        text_encoder_2_lora_layers=te2_sd,
        unet_lora_adapter_metadata=portable(config_u),
        text_encoder_lora_adapter_metadata=portable(config_t),
        text_encoder_2_lora_adapter_metadata=portable(config_t),
        weight_name="peft.safetensors", safe_serialization=True)
    return len(unet_sd) + len(te_sd) + len(te2_sd)


def modules(model, suffixes, kind):
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, kind) and any(n.endswith(s) for s in suffixes)]


def make_kohya(g, name, targets, rank, alpha):
    """`targets`: (kohya key without suffix, module) pairs."""
    sd = {}
    for key, m in targets:
        if isinstance(m, torch.nn.Conv2d):
            down = torch.randn(rank, m.in_channels, *m.kernel_size, generator=g)
            up = torch.randn(m.out_channels, rank, 1, 1, generator=g)
            fan = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        else:
            down = torch.randn(rank, m.in_features, generator=g)
            up = torch.randn(m.out_features, rank, generator=g)
            fan = m.in_features
        sd[key + ".lora_down.weight"] = (0.8 * down / fan ** 0.5).contiguous()
        sd[key + ".lora_up.weight"] = (0.8 * up / rank ** 0.5).contiguous()
        sd[key + ".alpha"] = torch.tensor(float(alpha))
    save_file(sd, os.path.join(OUT, f"{name}.safetensors"))
    return 2 * len(targets)


def unet_keys(pipe, suffixes, kinds):
    config = pipe.unet.config
    return [("lora_unet_" + sgm_name(n, config).replace(".", "_"), m)
            for n, m in modules(pipe.unet, suffixes, kinds)]


def te_keys(pipe, suffixes):
    """kohya writes transformers 4's names (`text_model.encoder...`); transformers 5's CLIPTextModel
    dropped the `text_model` level (CLIPTextModelWithProjection kept it)."""
    out = []
    for prefix, encoder in [("lora_te1_", pipe.text_encoder), ("lora_te2_", pipe.text_encoder_2)]:
        level = "" if hasattr(encoder, "text_model") else "text_model_"
        out += [(prefix + level + n.replace(".", "_"), m)
                for n, m in modules(encoder, suffixes, torch.nn.Linear)]
    return out


def lora_params(pipe, adapter):
    """How many LoRA tensors of `adapter` diffusers loaded (every key must have landed)."""
    return sum(len(get_peft_model_state_dict(m, adapter_name=adapter))
               for m in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
               if adapter in getattr(m, "peft_config", {}))


def generate(pipe, prompt, negative):
    with torch.no_grad():
        image = pipe(prompt=strip(prompt), negative_prompt=strip(negative), num_inference_steps=4,
                     guidance_scale=5.0, height=32, width=32,
                     generator=torch.Generator("cpu").manual_seed(42), output_type="np").images
    return torch.from_numpy(np.ascontiguousarray(image)).float()


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(2025)
    expected = {"peft": make_peft(g)}
    base = load_pipe()
    lin = torch.nn.Linear
    kohya = unet_keys(base, UNET_LINEARS + ["time_emb_proj"], lin) + te_keys(base, TE_LINEARS)
    assert any("middle_block_1" in k for k, _ in kohya) and any("output_blocks" in k for k, _ in kohya)
    expected["kohya"] = make_kohya(g, "kohya", kohya, 4, 2.0)
    conv = unet_keys(base, ["conv1", "conv2", "conv_shortcut", "downsamplers.0.conv",
                            "upsamplers.0.conv"], torch.nn.Conv2d)
    conv += unet_keys(base, ["attentions.0.proj_in"], lin)[:1]
    for part in ["_op", "_skip_connection", "_2_conv", "_in_layers_2", "middle_block_2_out_layers_3"]:
        assert any(k.endswith(part) or part in k for k, _ in conv), part
    expected["locon"] = make_kohya(g, "locon", conv, 2, 1.0)

    golden = {"none/image": generate(load_pipe(), PROMPT, NEGATIVE)}
    cases = []
    for case in CASES:
        pipe = load_pipe()
        names = list(case["loras"])
        for n in names:
            pipe.load_lora_weights(OUT, weight_name=f"{n}.safetensors", adapter_name=n)
            assert lora_params(pipe, n) == expected[n], (n, lora_params(pipe, n), expected[n])
        pipe.set_adapters(names, adapter_weights=[case["loras"][n] for n in names])
        negative = case.get("negative", NEGATIVE)
        image = generate(pipe, case["prompt"], negative)
        golden[f"{case['name']}/image"] = image
        cases.append(dict(name=case["name"], prompt=case["prompt"], negative=negative, seed=42,
                          steps=4, cfg=5.0, width=32, height=32, sampler="Euler"))
        diff = (image - golden["none/image"]).abs()
        print(f"{case['name']}: max |diff| from no adapters {float(diff.max()):.3f}, "
              f"mean {float(diff.mean()):.3f}")
    save_file(golden, os.path.join(FX, "lora_golden.safetensors"))
    with open(os.path.join(FX, "lora_cases.json"), "w") as f:
        json.dump({"prompt": PROMPT, "negative": NEGATIVE, "cases": cases,
                   "hashes": {n: addnet_hash(n) for n in expected}}, f, indent=2)
        f.write("\n")


def addnet_hash(name):
    """A1111's LoRA hash (modules/hashes.py addnet_hash_safetensors): SHA-256 after the header."""
    with open(os.path.join(OUT, f"{name}.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(n + 8)
        return hashlib.sha256(f.read()).hexdigest()


def strip(prompt):
    """A1111 removes each <lora:...> tag from the text (the tokenizer ignores leftover spaces)."""
    return re.sub(r"<lora:[^>]*>", "", prompt)


if __name__ == "__main__":
    main()
