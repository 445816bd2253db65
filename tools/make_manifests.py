#!/usr/bin/env python3
"""Writes the tensor manifests (names and shapes, no weights) of the real SD 1.5, SD 2.1, SD-Turbo, SDXL
base 1.0 and SDXL refiner 1.0 checkpoints in both layouts, for tests/tests/single_file.rs:

  tests/fixtures/manifests/<model>-diffusers.json.gz   unet/, vae/ and text_encoder/ (SDXL: text_encoder/
                                                       and text_encoder_2/; the refiner only the latter)
                                                       of the diffusers folder: each component's
                                                       config.json and tensors
  tests/fixtures/manifests/<model>-original.json.gz    the single-file checkpoint (CompVis / Stability
                                                       layout) with every tensor it carries

No hub access: the diffusers layout comes from instantiating diffusers' UNet2DConditionModel and
AutoencoderKL and transformers' CLIPTextModel on the meta device from the published configs written
below (transformers 5 names its state dict without the "text_model." prefix that the published
text_encoder/model.safetensors files have; the manifest restores it). The original layout is the inverse
of diffusers' single-file conversion (tools/sd_original_layout.py) plus the tensors diffusers drops:
the DDPM schedule and EMA buffers every CompVis checkpoint carries, the SD 1.x CLIP position_ids buffer,
and for SD 2.x the 24th OpenCLIP resblock, text_projection and logit_scale (diffusers' CLIPTextModel
stops at the penultimate layer). Which of these buffers a given published file carries is taken from the
CompVis/OpenCLIP module structure, not read from the files; kiln's loader ignores all of them. SDXL
(Stability's generative-models layout) carries no schedule buffers; its extras are CLIP-L's position_ids
buffer and bigG's logit_scale (SDXL runs every bigG layer and its text projection).

The script checks the round trip: diffusers' own convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
convert_ldm_clip_checkpoint and convert_open_clip_checkpoint, run on a meta-tensor state dict of the
original layout, must give back exactly the diffusers-layout names and shapes.

Usage: /tmp/venv-vis/bin/python tools/make_manifests.py  (from anywhere)
"""
import copy
import gzip
import json
import os
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sd_original_layout as layout  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "manifests")

CROSS_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
CROSS_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

# unet/config.json of stable-diffusion-v1-5 (fields as published; absent ones take diffusers' defaults).
SD15_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": CROSS_DOWN,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": CROSS_UP,
}
# stabilityai/stable-diffusion-2-1 (768-v): heads [5, 10, 20, 20] (64-wide), OpenCLIP-H context, linear
# proj_in / proj_out.
SD21_UNET = dict(
    SD15_UNET,
    attention_head_dim=[5, 10, 20, 20],
    cross_attention_dim=1024,
    dual_cross_attention=False,
    num_class_embeds=None,
    only_cross_attention=False,
    sample_size=96,
    upcast_attention=True,
    use_linear_projection=True,
)
# stabilityai/sd-turbo: distilled from SD 2.1 at 512 px (SD 2.1-base's UNet).
TURBO_UNET = dict(SD21_UNET, sample_size=64, upcast_attention=False)

SD_VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# text_encoder/config.json: OpenAI CLIP ViT-L/14's text tower for SD 1.x ...
CLIP_L = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}
# ... and OpenCLIP ViT-H/14's for SD 2.x / SD-Turbo: 23 of its 24 layers (SD 2.x uses the penultimate).
OPEN_CLIP_H = dict(
    CLIP_L,
    hidden_act="gelu",
    hidden_size=1024,
    intermediate_size=4096,
    num_attention_heads=16,
    num_hidden_layers=23,
    projection_dim=512,
)

MODELS = {
    "sd15": ("SD 1.5 (stable-diffusion-v1-5, v1-5-pruned-emaonly.safetensors)", SD15_UNET, SD_VAE, CLIP_L),
    "sd21": ("SD 2.1 768-v (stable-diffusion-2-1, v2-1_768-ema-pruned.safetensors)", SD21_UNET,
             dict(SD_VAE, sample_size=768), OPEN_CLIP_H),
    "sd-turbo": ("SD-Turbo (sd-turbo, sd_turbo.safetensors)", TURBO_UNET, SD_VAE, OPEN_CLIP_H),
}


# stabilityai/stable-diffusion-xl-base-1.0: unet/, vae/ (sdxl-vae), text_encoder/ (CLIP ViT-L),
# text_encoder_2/ (OpenCLIP ViT-bigG/14 with its projection) as published.
SDXL_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}
# stabilityai/stable-diffusion-xl-refiner-1.0: four levels of 384 .. 1536, 4 transformer blocks each,
# bigG context only (1280), 5 time ids (the aesthetic score replaces the target size).
SDXL_REFINER_UNET = dict(
    SDXL_UNET,
    attention_head_dim=[6, 12, 24, 24],
    block_out_channels=[384, 768, 1536, 1536],
    cross_attention_dim=1280,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    projection_class_embeddings_input_dim=2560,
    transformer_layers_per_block=4,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
)
SDXL_VAE = dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
OPEN_CLIP_BIG_G = dict(
    CLIP_L,
    architectures=["CLIPTextModelWithProjection"],
    hidden_act="gelu",
    hidden_size=1280,
    intermediate_size=5120,
    num_attention_heads=20,
    num_hidden_layers=32,
    projection_dim=1280,
)

SDXL_MODELS = {
    "sdxl-base": (
        "SDXL base 1.0 (stable-diffusion-xl-base-1.0, sd_xl_base_1.0.safetensors)",
        SDXL_UNET,
        {"text_encoder": CLIP_L, "text_encoder_2": OPEN_CLIP_BIG_G},
        layout.SDXL_OPEN_CLIP,
    ),
    "sdxl-refiner": (
        "SDXL refiner 1.0 (stable-diffusion-xl-refiner-1.0, sd_xl_refiner_1.0.safetensors)",
        SDXL_REFINER_UNET,
        {"text_encoder_2": OPEN_CLIP_BIG_G},
        layout.REFINER_OPEN_CLIP,
    ),
}


def model_kwargs(config):
    return {k: v for k, v in config.items() if not k.startswith("_")}


def meta_state_dicts(unet_cfg, vae_cfg, clip_cfg):
    """(unet, vae, text_encoder) state dicts of meta tensors, text encoder names with "text_model."."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**model_kwargs(unet_cfg))
        vae = AutoencoderKL(**model_kwargs(vae_cfg))
        text = CLIPTextModel(CLIPTextConfig(**model_kwargs(clip_cfg)))
    text_sd = {"text_model." + k.removeprefix("text_model."): v for k, v in text.state_dict().items()}
    return unet.state_dict(), vae.state_dict(), text_sd, text


def shapes(state_dict):
    return {k: list(v.shape) for k, v in sorted(state_dict.items())}


def meta(shape):
    return torch.empty(shape, device="meta")


def original_layout(unet_cfg, vae_cfg, clip_cfg, unet_sd, vae_sd, text_sd):
    """The single-file state dict (meta tensors) and the names of its non-weight / unused extras."""
    out = {}
    out.update(layout.to_original(unet_sd, lambda n: layout.unet_name(n, unet_cfg)))
    out.update(layout.to_original(vae_sd, lambda n: layout.vae_name(n, vae_cfg)))
    extras = {name: meta([1000]) for name in layout.SCHEDULE_BUFFERS}
    extras.update({name: meta([]) for name in layout.EMA_BUFFERS})
    if clip_cfg["hidden_act"] == "quick_gelu":
        out.update(layout.to_original(text_sd, layout.clip_name))
        extras[layout.CLIP + "text_model.embeddings.position_ids"] = meta(
            [1, clip_cfg["max_position_embeddings"]]
        )
    else:
        out.update(layout.to_original(text_sd, layout.open_clip_name))
        # OpenCLIP-H's text projection is [1024, 1024].
        extras.update(
            layout.open_clip_extras(
                clip_cfg["hidden_size"],
                clip_cfg["intermediate_size"],
                clip_cfg["num_hidden_layers"],
                clip_cfg["hidden_size"],
                meta,
            )
        )
    assert not set(out) & set(extras)
    return out, extras


def check_round_trip(name, original, unet_cfg, vae_cfg, clip_cfg, text_model, unet_sd, vae_sd, text_sd):
    """diffusers' own single-file conversion of `original` must give the diffusers-layout tensors."""
    unet_back = convert_ldm_unet_checkpoint(original, model_kwargs(unet_cfg))
    vae_back = convert_ldm_vae_checkpoint(original, model_kwargs(vae_cfg))
    if clip_cfg["hidden_act"] == "quick_gelu":
        text_back = convert_ldm_clip_checkpoint(original)
        # diffusers hands the position_ids buffer on; transformers' model does not keep it.
        text_back.pop("text_model.embeddings.position_ids")
    else:
        text_back = convert_open_clip_checkpoint(text_model, original)
    for what, got, want in [
        ("unet", unet_back, unet_sd),
        ("vae", vae_back, vae_sd),
        ("text_encoder", text_back, text_sd),
    ]:
        got, want = shapes(got), shapes(want)
        if got != want:
            missing = sorted(set(want) - set(got))[:5]
            extra = sorted(set(got) - set(want))[:5]
            wrong = [k for k in want if k in got and got[k] != want[k]][:5]
            raise SystemExit(f"{name} {what}: round trip differs: missing {missing} extra {extra} wrong {wrong}")
        print(f"  {what}: {len(want)} tensors round-trip through diffusers' conversion")


def write(path, manifest):
    text = json.dumps(manifest, indent=1, sort_keys=False) + "\n"
    # mtime=0 keeps the gzip bytes identical from run to run.
    with open(path, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
            gz.write(text.encode())
    print(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


def sdxl(key, title, unet_cfg, texts, big_g_prefix):
    """One SDXL model: the diffusers folder's components and the single file, round-tripped through
    diffusers' conversion as for SD."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**model_kwargs(unet_cfg)).state_dict()
        vae = AutoencoderKL(**model_kwargs(SDXL_VAE)).state_dict()
        models = {
            name: (CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel)(
                CLIPTextConfig(**model_kwargs(cfg))
            )
            for name, cfg in texts.items()
        }
    # Published files name CLIPTextModel's tensors with "text_model."; CLIPTextModelWithProjection's
    # state dict already has it (and text_projection.weight beside it).
    text_sds = {
        name: {
            (k if name == "text_encoder_2" else "text_model." + k.removeprefix("text_model.")): v
            for k, v in model.state_dict().items()
        }
        for name, model in models.items()
    }
    original = {}
    original.update(layout.to_original(unet, lambda n: layout.unet_name(n, unet_cfg)))
    original.update(layout.to_original(vae, lambda n: layout.vae_name(n, SDXL_VAE)))
    extras = {}
    if "text_encoder" in text_sds:
        original.update(
            layout.to_original(text_sds["text_encoder"], lambda n: layout.clip_name(n, layout.SDXL_CLIP))
        )
        extras[layout.SDXL_CLIP + "text_model.embeddings.position_ids"] = meta([1, CLIP_L["max_position_embeddings"]])
    original.update(
        layout.to_original(text_sds["text_encoder_2"], lambda n: layout.open_clip_name(n, big_g_prefix))
    )
    extras[big_g_prefix + "logit_scale"] = meta([])
    full = dict(original)
    full.update(extras)

    backs = {
        "unet": (convert_ldm_unet_checkpoint(copy.copy(full), model_kwargs(unet_cfg)), unet),
        "vae": (convert_ldm_vae_checkpoint(copy.copy(full), model_kwargs(SDXL_VAE)), vae),
        "text_encoder_2": (
            convert_open_clip_checkpoint(models["text_encoder_2"], copy.copy(full), prefix=big_g_prefix),
            text_sds["text_encoder_2"],
        ),
    }
    if "text_encoder" in text_sds:
        back = convert_ldm_clip_checkpoint(copy.copy(full), layout.SDXL_CLIP)
        back.pop("text_model.embeddings.position_ids")
        backs["text_encoder"] = (back, text_sds["text_encoder"])
    for what, (got, want) in backs.items():
        if shapes(got) != shapes(want):
            raise SystemExit(f"{key} {what}: round trip differs")
        print(f"  {what}: {len(want)} tensors round-trip through diffusers' conversion")
    components = {"unet": {"config": unet_cfg, "tensors": shapes(unet)}, "vae": {"config": SDXL_VAE, "tensors": shapes(vae)}}
    for name, cfg in texts.items():
        components[name] = {"config": cfg, "tensors": shapes(text_sds[name])}
    header = {"model": title, "generated_by": "tools/make_manifests.py"}
    write(os.path.join(OUT, f"{key}-diffusers.json.gz"), dict(header, layout="diffusers", components=components))
    write(
        os.path.join(OUT, f"{key}-original.json.gz"),
        dict(header, layout="original", tensors=shapes(full), not_weights=sorted(extras)),
    )


def main():
    os.makedirs(OUT, exist_ok=True)
    for key, (title, unet_cfg, texts, big_g_prefix) in SDXL_MODELS.items():
        print(key)
        sdxl(key, title, unet_cfg, texts, big_g_prefix)
    for key, (title, unet_cfg, vae_cfg, clip_cfg) in MODELS.items():
        print(key)
        unet_sd, vae_sd, text_sd, text_model = meta_state_dicts(unet_cfg, vae_cfg, clip_cfg)
        original, extras = original_layout(unet_cfg, vae_cfg, clip_cfg, unet_sd, vae_sd, text_sd)
        full = dict(original)
        full.update(extras)
        check_round_trip(key, copy.copy(full), unet_cfg, vae_cfg, clip_cfg, text_model, unet_sd, vae_sd, text_sd)
        write(
            os.path.join(OUT, f"{key}-diffusers.json.gz"),
            {
                "model": title,
                "layout": "diffusers",
                "generated_by": "tools/make_manifests.py",
                "components": {
                    "unet": {"config": unet_cfg, "tensors": shapes(unet_sd)},
                    "vae": {"config": vae_cfg, "tensors": shapes(vae_sd)},
                    "text_encoder": {"config": clip_cfg, "tensors": shapes(text_sd)},
                },
            },
        )
        write(
            os.path.join(OUT, f"{key}-original.json.gz"),
            {
                "model": title,
                "layout": "original",
                "generated_by": "tools/make_manifests.py",
                "tensors": shapes(full),
                "not_weights": sorted(extras),
            },
        )


if __name__ == "__main__":
    main()
