#!/usr/bin/env python3
"""Hires-fix goldens for tests/tests/hires.rs: diffusers doing A1111's two passes on the tiny SD 1.x
pipeline (tests/fixtures/tiny-sd1, see tools/make_pipeline_fixtures.py).

First pass: StableDiffusionPipeline at the base size, output_type="latent". Upscale:
  latent modes: torch.nn.functional.interpolate of the latents as A1111 names them ("Latent" =
  bilinear, "Latent (bicubic antialiased)" = bicubic with antialias, "Latent (nearest-exact)", ...);
  "Nearest" (an image upscaler): the first pass decoded to 8-bit (output_type="pil"), resized with
  PIL's NEAREST as A1111's "Nearest" upscaler does.
Second pass: StableDiffusionImg2ImgPipeline from those latents (4-channel input is taken as
latents) or that image, with fresh torch.Generator("cpu").manual_seed(seed + i) generators, over
A1111's schedule for `hr_steps` steps: int(hr_steps / min(denoising, 0.999)) inference steps, of
which the last hr_steps run (the strength passed makes diffusers' int(steps * strength) equal
hr_steps). Records <case>/image F32 [N, H, W, 3] in tests/fixtures/tiny-sd1/hires_golden.safetensors
and the cases in hires_cases.json.

Usage: /tmp/venv-vis/bin/python tools/make_hires_goldens.py
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_pipeline_fixtures import FX, SAMPLERS, SCHEDULERS, components  # noqa: E402
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline  # noqa: E402

LATENT_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}

PROMPT = "a red circle on a blue background"
CASES = [
    dict(name="latent_x2_euler", upscaler="Latent", width=32, height=32, hr_width=64,
         hr_height=64, steps=3, hr_steps=2, denoising=0.6, sampler="Euler", seed=7, batch=1),
    dict(name="bicubic_aa_resize_prompt_batch", upscaler="Latent (bicubic antialiased)",
         width=32, height=24, hr_width=48, hr_height=40, steps=3, hr_steps=3, denoising=0.7,
         sampler="Euler", hr_sampler="DPM++ 2M", hr_prompt="a green square", seed=11, batch=2),
    dict(name="nearest_exact_x1_5", upscaler="Latent (nearest-exact)", width=32, height=32,
         hr_width=48, hr_height=48, steps=2, hr_steps=2, denoising=0.5, sampler="DPM++ 2M",
         seed=3, batch=1),
    dict(name="bicubic_x1_5", upscaler="Latent (bicubic)", width=32, height=32,
         hr_width=48, hr_height=48, steps=2, hr_steps=2, denoising=0.8, sampler="Euler",
         seed=5, batch=1),
    dict(name="image_nearest_x2", upscaler="Nearest", width=32, height=24, hr_width=64,
         hr_height=48, steps=3, hr_steps=2, denoising=0.55, sampler="Euler", seed=9, batch=1),
]
CFG = 7.5
NEGATIVE = "blurry"


def pipe(cls, sampler):
    p = cls(**components("tiny-sd1", "tiny-sd1"))
    p.scheduler = SAMPLERS[sampler].from_config(SCHEDULERS["tiny-sd1"])
    p.set_progress_bar_config(disable=True)
    return p


def generators(case):
    return [torch.Generator("cpu").manual_seed(case["seed"] + i) for i in range(case["batch"])]


def run(case):
    first = pipe(StableDiffusionPipeline, case["sampler"])
    common = dict(negative_prompt=NEGATIVE, guidance_scale=CFG,
                  num_images_per_prompt=case["batch"])
    kw = dict(prompt=PROMPT, num_inference_steps=case["steps"], width=case["width"],
              height=case["height"], **common)
    hr_steps, d = case["hr_steps"], case["denoising"]
    total = int(hr_steps / min(d, 0.999))
    strength = min((hr_steps + 0.5) / total, 1.0)
    assert min(int(total * strength), total) == hr_steps
    with torch.no_grad():
        if case["upscaler"] in LATENT_MODES:
            latents = first(**kw, generator=generators(case), output_type="latent").images
            mode, aa = LATENT_MODES[case["upscaler"]]
            size = (case["hr_height"] // 2, case["hr_width"] // 2)  # tiny VAE: factor 2
            start = F.interpolate(latents, size=size, mode=mode, antialias=aa)
        else:
            pil = first(**kw, generator=generators(case), output_type="pil").images
            start = [im.resize((case["hr_width"], case["hr_height"]), Image.NEAREST) for im in pil]
        second = pipe(StableDiffusionImg2ImgPipeline, case.get("hr_sampler", case["sampler"]))
        # One prompt per image: the batch of latents / images is the batch.
        n = case["batch"]
        image = second(prompt=[case.get("hr_prompt", PROMPT)] * n, negative_prompt=[NEGATIVE] * n,
                       image=start, strength=strength, num_inference_steps=total,
                       generator=generators(case), output_type="np", guidance_scale=CFG).images
    image = torch.from_numpy(np.ascontiguousarray(image)).float()
    assert image.shape == (case["batch"], case["hr_height"], case["hr_width"], 3), image.shape
    print(f"{case['name']}: {tuple(image.shape)} mean {image.mean():.4f}")
    return image


def main():
    golden = {f"{c['name']}/image": run(c) for c in CASES}
    save_file(golden, os.path.join(FX, "hires_golden.safetensors"))
    cases = [{**c, "cfg": CFG, "negative": NEGATIVE, "prompt": PROMPT} for c in CASES]
    with open(os.path.join(FX, "hires_cases.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
