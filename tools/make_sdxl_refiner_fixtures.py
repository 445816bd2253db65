#!/usr/bin/env python3
"""Builds tests/fixtures/tiny-sdxl-refiner/: a tiny random-weight SDXL refiner as a diffusers folder
(StableDiffusionXLImg2ImgPipeline's layout, as stabilityai/stable-diffusion-xl-refiner-1.0 is
published: no text_encoder/ or tokenizer/, `requires_aesthetics_score: true`), and the goldens of
tests/tests/sdxl_refiner.rs.

  text_encoder_2, tokenizer_2, vae, scheduler   tiny-sdxl's (the real refiner shares bigG and the VAE
                  with base), so the refiner differs from base by its UNet and conditioning only
  unet            block_out (16, 32), one resnet per level (as the real refiner's config has more
                  levels, this keeps it small), transformer depth (1, 1), cross_attention_dim 48
                  (bigG alone), addition_time_embed_dim 8, projection_class_embeddings_input_dim 80
                  (= 5 * 8 + 40: original size, crop, aesthetic score)

  refiner_golden.safetensors + refiner_cases.json   <case>/image F32 [N, H, W, 3] (output_type="np"):
    two_stage: StableDiffusionXLPipeline (tiny-sdxl) with denoising_end=switch, output_type="latent",
      then this refiner's StableDiffusionXLImg2ImgPipeline with image=those latents and
      denoising_start=switch, one torch.Generator("cpu") per image passed to both (so ancestral noise
      carries on), float32 on the CPU; the refiner decodes.
    img2img: the refiner alone as an img2img model on tests/fixtures/tiny-sd1/init.png.
    two_stage_img2img: base Img2ImgPipeline with strength and denoising_end, then the refiner.
Negative prompts are never empty here: for "" A1111 (and kiln) zero the negative conditioning, but
the published refiner's force_zeros_for_empty_prompt is false, so diffusers would encode "".

Usage: /tmp/venv-vis/bin/python tools/make_sdxl_refiner_fixtures.py  (from anywhere; after
tools/make_sdxl_fixtures.py)
"""
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
BASE = os.path.join(FIXTURES, "tiny-sdxl")
FX = os.path.join(FIXTURES, "tiny-sdxl-refiner")
INIT = os.path.join(FIXTURES, "tiny-sd1", "init.png")

PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry, dark"
SIZE = 32
STEPS = 10

SAMPLERS = {
    "Euler": EulerDiscreteScheduler,
    "Euler a": EulerAncestralDiscreteScheduler,
    "DPM++ 2M": DPMSolverMultistepScheduler,
}

# stabilityai/stable-diffusion-xl-refiner-1.0's model_index.json as published (diffusers version
# aside).
MODEL_INDEX = {
    "_class_name": "StableDiffusionXLImg2ImgPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "force_zeros_for_empty_prompt": False,
    "image_encoder": [None, None],
    "requires_aesthetics_score": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": [None, None],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": [None, None],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

CASES = [
    # 10 leading steps are 901, 801, .., 1; the cut at 0.8 is 200: base 8 steps, refiner 2.
    dict(name="two_stage_euler", mode="two_stage", sampler="Euler", prompt=PROMPT,
         negative=NEGATIVE, cfg=5.0, seed=42, switch=0.8),
    # Cut at 500: 5 + 5 steps; the refiner's DPM++ 2M restarts at first order (diffusers' way).
    dict(name="two_stage_dpmpp_2m_switch_0.5", mode="two_stage", sampler="DPM++ 2M", prompt=PROMPT,
         negative="ugly", cfg=7.0, seed=1234, switch=0.5),
    # Two images (seeds 100, 101) not square: per-image noise streams carry on into the refiner.
    dict(name="two_stage_euler_a_batch2_48x32", mode="two_stage", sampler="Euler a", prompt=PROMPT,
         negative="ugly", cfg=6.0, seed=100, switch=0.7, batch=2, width=48, height=32),
    dict(name="img2img_refiner_only", mode="img2img", sampler="Euler", prompt=PROMPT,
         negative=NEGATIVE, cfg=5.0, seed=42, strength=0.6),
    dict(name="two_stage_img2img_euler", mode="two_stage_img2img", sampler="Euler", prompt=PROMPT,
         negative=NEGATIVE, cfg=5.0, seed=5, strength=0.75, switch=0.8),
]


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


def unet():
    torch.manual_seed(4005)
    model = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=48,
        norm_num_groups=8,
    ).eval()
    perturb(model, 4006)
    model.save_pretrained(os.path.join(FX, "unet"), safe_serialization=True)


def folder():
    if os.path.isdir(FX):
        shutil.rmtree(FX)
    os.makedirs(FX)
    for part, files in [("text_encoder_2", ["config.json", "model.safetensors"]),
                        ("tokenizer_2", ["vocab.json", "merges.txt", "tokenizer_config.json"]),
                        ("vae", ["config.json", "diffusion_pytorch_model.safetensors"]),
                        ("scheduler", ["scheduler_config.json"])]:
        os.makedirs(os.path.join(FX, part))
        for f in files:
            shutil.copyfile(os.path.join(BASE, part, f), os.path.join(FX, part, f))
    unet()
    write_json(os.path.join(FX, "model_index.json"), MODEL_INDEX)


def pipeline(cls, path, sampler):
    pipe = cls.from_pretrained(path, add_watermarker=False)
    pipe.scheduler = SAMPLERS[sampler].from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(case):
    batch = case.get("batch", 1)
    width, height = case.get("width", SIZE), case.get("height", SIZE)
    common = dict(prompt=case["prompt"], negative_prompt=case["negative"],
                  num_inference_steps=STEPS, guidance_scale=case["cfg"],
                  num_images_per_prompt=batch)
    if batch == 1:
        g = torch.Generator("cpu").manual_seed(case["seed"])
    else:
        g = [torch.Generator("cpu").manual_seed(case["seed"] + i) for i in range(batch)]
    refiner = pipeline(StableDiffusionXLImg2ImgPipeline, FX, case["sampler"])
    init = Image.open(INIT).convert("RGB")
    with torch.no_grad():
        if case["mode"] == "img2img":
            image = refiner(**common, image=init, strength=case["strength"], generator=g,
                            output_type="np").images
        else:
            if case["mode"] == "two_stage":
                base = pipeline(StableDiffusionXLPipeline, BASE, case["sampler"])
                latents = base(**common, height=height, width=width,
                               denoising_end=case["switch"], generator=g,
                               output_type="latent").images
            else:
                base = pipeline(StableDiffusionXLImg2ImgPipeline, BASE, case["sampler"])
                latents = base(**common, image=init, strength=case["strength"],
                               denoising_end=case["switch"], generator=g,
                               output_type="latent").images
            image = refiner(**common, image=latents, denoising_start=case["switch"], generator=g,
                            output_type="np").images
    image = torch.from_numpy(np.ascontiguousarray(image)).float()
    assert image.shape == (batch, height, width, 3), image.shape
    print(f"{case['name']}: image {tuple(image.shape)} mean {image.mean():.4f} std {image.std():.4f}")
    return {f"{case['name']}/image": image}


def main():
    folder()
    golden = {}
    for case in CASES:
        golden.update(run(case))
    save_file(golden, os.path.join(FX, "refiner_golden.safetensors"))
    defaults = dict(steps=STEPS, width=SIZE, height=SIZE, batch=1, strength=1.0, switch=None)
    write_json(os.path.join(FX, "refiner_cases.json"),
               {"cases": [{**defaults, **c} for c in CASES]})


if __name__ == "__main__":
    main()
