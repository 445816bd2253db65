#!/usr/bin/env python3
"""Builds tiny single-file checkpoints in the original SD layout from the tiny diffusers-layout fixtures,
for tests/tests/single_file.rs:

  tests/fixtures/single-file/tiny-sd1.safetensors  tiny-sd1's unet/, vae/ and text_encoder/ (CLIP, SD 1.x
                                                   names under cond_stage_model.transformer.text_model.)
  tests/fixtures/single-file/tiny-sd2.safetensors  tiny-sd2's unet/ and text_encoder/ as OpenCLIP (SD 2.x:
                                                   fused q/k/v in_proj, resblocks, ln_final, ...); no VAE
  tests/fixtures/single-file/tiny-sdxl.safetensors tiny-sdxl's unet/ (label_emb = add_embedding), vae/,
                                                   text_encoder/ as SDXL's CLIP-L (conditioner.embedders.0.
                                                   transformer.text_model.) and text_encoder_2 as SDXL's
                                                   OpenCLIP bigG (conditioner.embedders.1.model.: fused
                                                   in_proj, text_projection transposed)
  tests/fixtures/single-file/tiny-sdxl-refiner.safetensors  tiny-sdxl-refiner's unet/ and vae/, and its
                                                   text_encoder_2 as the refiner's only encoder, bigG
                                                   under conditioner.embedders.0.model.

The weights are exactly the fixtures' (f32), renamed by the inverse of diffusers' single-file conversion
(tools/sd_original_layout.py), so kiln must give bit-identical outputs from either layout. Like real
checkpoints they also carry tensors a loader must skip: alphas_cumprod (the DDPM schedule buffer,
scaled_linear 0.00085..0.012), and in tiny-sd1 CLIP's int64 position_ids buffer; in tiny-sd2 an extra
last resblock (SD 2.x conditions on OpenCLIP's penultimate layer, so the diffusers text encoder has one
layer fewer than the checkpoint), text_projection and logit_scale, all random; in tiny-sdxl CLIP-L's
position_ids buffer and bigG's logit_scale (SDXL uses every bigG layer and its projection).

Checked here with diffusers' own conversion: convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
convert_ldm_clip_checkpoint and convert_open_clip_checkpoint give back every fixture tensor exactly; for
tiny-sdxl, StableDiffusionXLPipeline.from_single_file (with config= the tiny-sdxl folder, which its tiny
text encoders need: diffusers recognises SDXL by bigG's 10th resblock) loads every component with exactly
the fixture's weights.

Usage: /tmp/venv-vis/bin/python tools/make_single_file_fixtures.py [NAME ...]  (from anywhere; the
names, e.g. tiny-sdxl-refiner, build only those files)
"""
import json
import os
import sys

import torch
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sd_original_layout as layout  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIXTURES, "single-file")


def component(variant, name, weights):
    folder = os.path.join(FIXTURES, variant, name)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    return config, load_file(os.path.join(folder, weights))


def schedule():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return {"alphas_cumprod": torch.cumprod(1 - betas, 0).float()}


def check(name, got, want):
    """`got` (diffusers' conversion of the single file) must equal `want` (the fixture) exactly."""
    if sorted(got) != sorted(want):
        raise SystemExit(
            f"{name}: names differ: missing {sorted(set(want) - set(got))[:5]} extra {sorted(set(got) - set(want))[:5]}"
        )
    for k, v in want.items():
        if got[k].shape != v.shape or not torch.equal(got[k], v):
            raise SystemExit(f"{name}: {k} differs")
    print(f"  {name}: {len(want)} tensors equal after diffusers' conversion")


def text_prefixed(sd):
    return {"text_model." + k.removeprefix("text_model."): v for k, v in sd.items()}


def tiny_sd1():
    unet_cfg, unet = component("tiny-sd1", "unet", "diffusion_pytorch_model.safetensors")
    vae_cfg, vae = component("tiny-sd1", "vae", "diffusion_pytorch_model.safetensors")
    clip_cfg, clip = component("tiny-sd1", "text_encoder", "model.safetensors")
    clip = text_prefixed(clip)
    out = {}
    out.update(layout.to_original(unet, lambda n: layout.unet_name(n, unet_cfg)))
    out.update(layout.to_original(vae, lambda n: layout.vae_name(n, vae_cfg)))
    out.update(layout.to_original(clip, layout.clip_name))
    out.update(schedule())
    positions = clip_cfg["max_position_embeddings"]
    out[layout.CLIP + "text_model.embeddings.position_ids"] = torch.arange(positions).unsqueeze(0)

    check("unet", convert_ldm_unet_checkpoint(dict(out), unet_cfg), unet)
    check("vae", convert_ldm_vae_checkpoint(dict(out), vae_cfg), vae)
    back = convert_ldm_clip_checkpoint(dict(out))
    assert torch.equal(back.pop("text_model.embeddings.position_ids"), torch.arange(positions).unsqueeze(0))
    check("text_encoder", back, clip)
    return out


def tiny_sd2():
    unet_cfg, unet = component("tiny-sd2", "unet", "diffusion_pytorch_model.safetensors")
    clip_cfg, clip = component("tiny-sd2", "text_encoder", "model.safetensors")
    clip = text_prefixed(clip)
    out = {}
    out.update(layout.to_original(unet, lambda n: layout.unet_name(n, unet_cfg)))
    out.update(layout.to_original(clip, layout.open_clip_name))
    out.update(schedule())
    g = torch.Generator().manual_seed(7)
    hidden, layers = clip_cfg["hidden_size"], clip_cfg["num_hidden_layers"]
    out.update(
        layout.open_clip_extras(
            hidden,
            clip_cfg["intermediate_size"],
            layers,
            clip_cfg["projection_dim"],
            lambda shape: torch.randn(shape, generator=g),
        )
    )

    check("unet", convert_ldm_unet_checkpoint(dict(out), unet_cfg), unet)
    with torch.device("meta"):
        text_model = CLIPTextModel(CLIPTextConfig(**clip_cfg))
    back = convert_open_clip_checkpoint(text_model, dict(out))
    # diffusers drops the extra layer only for SD 2.x's real 24-layer tower (by name, resblocks.23);
    # for this 4-resblock tower it hands layer 3 on, and the text projection, which CLIPTextModel lacks.
    back = {
        k: v
        for k, v in back.items()
        if not k.startswith(f"text_model.encoder.layers.{layers}.") and k != "text_projection.weight"
    }
    check("text_encoder", back, clip)
    return out


def tiny_sdxl():
    unet_cfg, unet = component("tiny-sdxl", "unet", "diffusion_pytorch_model.safetensors")
    vae_cfg, vae = component("tiny-sdxl", "vae", "diffusion_pytorch_model.safetensors")
    clip_cfg, clip = component("tiny-sdxl", "text_encoder", "model.safetensors")
    _, big_g = component("tiny-sdxl", "text_encoder_2", "model.safetensors")
    out = {}
    out.update(layout.to_original(unet, lambda n: layout.unet_name(n, unet_cfg)))
    out.update(layout.to_original(vae, lambda n: layout.vae_name(n, vae_cfg)))
    out.update(layout.to_original(text_prefixed(clip), lambda n: layout.clip_name(n, layout.SDXL_CLIP)))
    out.update(layout.to_original(big_g, lambda n: layout.open_clip_name(n, layout.SDXL_OPEN_CLIP)))
    positions = clip_cfg["max_position_embeddings"]
    out[layout.SDXL_CLIP + "text_model.embeddings.position_ids"] = torch.arange(positions).unsqueeze(0)
    out[layout.SDXL_OPEN_CLIP + "logit_scale"] = torch.tensor(4.6052)
    return out


def tiny_sdxl_refiner():
    unet_cfg, unet = component("tiny-sdxl-refiner", "unet", "diffusion_pytorch_model.safetensors")
    vae_cfg, vae = component("tiny-sdxl-refiner", "vae", "diffusion_pytorch_model.safetensors")
    _, big_g = component("tiny-sdxl-refiner", "text_encoder_2", "model.safetensors")
    out = {}
    out.update(layout.to_original(unet, lambda n: layout.unet_name(n, unet_cfg)))
    out.update(layout.to_original(vae, lambda n: layout.vae_name(n, vae_cfg)))
    out.update(layout.to_original(big_g, lambda n: layout.open_clip_name(n, layout.REFINER_OPEN_CLIP)))
    out[layout.REFINER_OPEN_CLIP + "logit_scale"] = torch.tensor(4.6052)
    return out


def check_sdxl_with_diffusers(path):
    """diffusers' own single-file loader on the written file gives every tiny-sdxl tensor exactly."""
    from diffusers import StableDiffusionXLPipeline

    folder = os.path.join(FIXTURES, "tiny-sdxl")
    pipe = StableDiffusionXLPipeline.from_single_file(path, config=folder, torch_dtype=torch.float32)
    for name, weights in [
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("vae", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"),
        ("text_encoder_2", "model.safetensors"),
    ]:
        _, want = component("tiny-sdxl", name, weights)
        got = getattr(pipe, name).state_dict()
        got = {k: v for k, v in got.items() if k in want or not k.endswith("position_ids")}
        check(f"{name} (StableDiffusionXLPipeline.from_single_file)", got, want)


def main():
    os.makedirs(OUT, exist_ok=True)
    builds = [("tiny-sd1", tiny_sd1), ("tiny-sd2", tiny_sd2), ("tiny-sdxl", tiny_sdxl),
              ("tiny-sdxl-refiner", tiny_sdxl_refiner)]
    # Names on the command line build only those.
    wanted = sys.argv[1:]
    for name, build in builds:
        if wanted and name not in wanted:
            continue
        print(name)
        tensors = {k: v.contiguous() for k, v in build().items()}
        path = os.path.join(OUT, f"{name}.safetensors")
        save_file(tensors, path, metadata={"format": "pt", "generated_by": "tools/make_single_file_fixtures.py"})
        print(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")
        if name == "tiny-sdxl":
            check_sdxl_with_diffusers(path)


if __name__ == "__main__":
    main()
