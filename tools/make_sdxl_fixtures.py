#!/usr/bin/env python3
"""Builds tests/fixtures/tiny-sdxl/: a tiny random-weight SDXL pipeline as a diffusers folder
(StableDiffusionXLPipeline's layout) that SDXL tests load and compare with diffusers.

Shapes follow diffusers' own SDXL pipeline tests (get_dummy_components), made slightly asymmetric so
that mixing up the two text encoders cannot pass:
  text_encoder    CLIPTextModel, 32 wide, 3 layers, quick_gelu (CLIP ViT-L's activation)
  text_encoder_2  CLIPTextModelWithProjection, 48 wide, 4 layers, gelu (OpenCLIP bigG's), projection 40
  unet            block_out (16, 32), DownBlock2D + CrossAttnDownBlock2D, transformer depth (1, 2),
                  heads (2, 4), linear projections, cross_attention_dim 80 (= 32 + 48),
                  addition_embed_type "text_time", addition_time_embed_dim 8,
                  projection_class_embeddings_input_dim 88 (= 6 * 8 + 40)
  vae             tiny-sd1's VAE weights with SDXL's scaling_factor 0.13025 (force_upcast true)
  tokenizer       tiny-sd1's cut CLIP BPE (pads with <|endoftext|>, as CLIP ViT-L's does)
  tokenizer_2     the same vocabulary padding with "!" (as SDXL's tokenizer_2 does)
  scheduler       SDXL base 1.0's scheduler_config.json (EulerDiscrete, leading spacing)
Weights: torch's default init, then biases ~ 0.1 N(0,1) and norm scales ~ 1 + 0.2 N(0,1), so that
no part of the network is an identity or a zero.

Usage: /tmp/venv-vis/bin/python tools/make_sdxl_fixtures.py  (from anywhere)
"""
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from diffusers import UNet2DConditionModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SD1 = os.path.join(FIXTURES, "tiny-sd1")
FX = os.path.join(FIXTURES, "tiny-sdxl")

# stabilityai/stable-diffusion-xl-base-1.0's scheduler/scheduler_config.json as published.
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "force_zeros_for_empty_prompt": True,
    "image_encoder": [None, None],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))


def text_encoders():
    common = dict(vocab_size=1000, max_position_embeddings=77, layer_norm_eps=1e-5,
                  bos_token_id=0, eos_token_id=2, pad_token_id=1)
    torch.manual_seed(2001)
    te1 = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                       num_hidden_layers=3, hidden_act="quick_gelu",
                                       projection_dim=32, **common)).eval()
    perturb(te1, 2002)
    te1.save_pretrained(os.path.join(FX, "text_encoder"), safe_serialization=True)
    torch.manual_seed(2003)
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=48, intermediate_size=64,
                                                     num_attention_heads=4, num_hidden_layers=4,
                                                     hidden_act="gelu", projection_dim=40,
                                                     **common)).eval()
    perturb(te2, 2004)
    te2.save_pretrained(os.path.join(FX, "text_encoder_2"), safe_serialization=True)


def unet():
    torch.manual_seed(2005)
    model = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=88,
        cross_attention_dim=80,
        norm_num_groups=8,
    ).eval()
    perturb(model, 2006)
    model.save_pretrained(os.path.join(FX, "unet"), safe_serialization=True)


def vae():
    out = os.path.join(FX, "vae")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(SD1, "vae", "config.json")) as f:
        config = json.load(f)
    config["scaling_factor"] = 0.13025
    config["force_upcast"] = True
    write_json(os.path.join(out, "config.json"), config)
    shutil.copyfile(os.path.join(SD1, "vae", "diffusion_pytorch_model.safetensors"),
                    os.path.join(out, "diffusion_pytorch_model.safetensors"))


def tokenizers():
    src = os.path.join(SD1, "tokenizer")
    for name, pad in [("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")]:
        out = os.path.join(FX, name)
        os.makedirs(out, exist_ok=True)
        for f in ["vocab.json", "merges.txt"]:
            shutil.copyfile(os.path.join(src, f), os.path.join(out, f))
        with open(os.path.join(src, "tokenizer_config.json")) as f:
            config = json.load(f)
        config["pad_token"] = pad
        write_json(os.path.join(out, "tokenizer_config.json"), config)


def main():
    os.makedirs(FX, exist_ok=True)
    text_encoders()
    unet()
    vae()
    tokenizers()
    os.makedirs(os.path.join(FX, "scheduler"), exist_ok=True)
    write_json(os.path.join(FX, "scheduler", "scheduler_config.json"), SDXL_SCHEDULER)
    write_json(os.path.join(FX, "model_index.json"), MODEL_INDEX)
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(FX)
    g = torch.Generator("cpu").manual_seed(0)
    image = pipe("a red circle", num_inference_steps=2, height=32, width=32, generator=g,
                 output_type="np").images
    print("tiny-sdxl loads in diffusers; a 2-step 32x32 image has mean", float(image.mean()))


if __name__ == "__main__":
    main()
