#!/usr/bin/env python3
"""Builds the tiny AutoencoderKL fixture for kiln's golden tests (tests/tests/vae.rs).

A random-weight diffusers AutoencoderKL of SD 1.x/2.x's architecture, shrunk: block_out_channels
[16, 32] (two levels: one Downsample2D / Upsample2D, latent = image / 2), layers_per_block 1 (the
decoder's up blocks have 2 resnets), norm_num_groups 8, latent_channels 4, mid-block attention on.
The channel counts are half of [32, 64] to keep the weights under the fixtures' size budget (~0.7 MB);
the level 0 -> 1 channel change still gives the encoder and decoder each a resnet with conv_shortcut.

tests/fixtures/tiny-sd1/vae/ gets config.json + diffusion_pytorch_model.safetensors (save_pretrained,
f32) and golden.safetensors:
  image        F32 [1, 3, 32, 32]   uniform in [-1, 1]
  mean         F32 [1, 4, 16, 16]   encode(image).latent_dist.mean
  logvar       F32 [1, 4, 16, 16]   encode(image).latent_dist.logvar (clamped to [-30, 20] by diffusers)
  noise        F32 [1, 4, 16, 16]   standard normal
  sample       F32 [1, 4, 16, 16]   mean + exp(0.5 logvar) * noise (DiagonalGaussianDistribution.sample)
  latents      F32 [1, 4, 16, 16]   standard normal
  decoded      F32 [1, 3, 32, 32]   decode(latents).sample (no scaling_factor: as AutoencoderKL.decode)
  image_b2     F32 [2, 3, 16, 24]   a batch of two non-square images (catches H/W and batch mix-ups)
  mean_b2, logvar_b2 [2, 4, 8, 12]
  latents_b2   F32 [2, 4, 8, 12]
  decoded_b2   F32 [2, 3, 16, 24]
The goldens are computed in float64 from the saved f32 weights, so they carry no f32 rounding of the
reference itself.

Usage: /work/main/.venv/bin/python tools/make_vae_fixtures.py  (from anywhere)
"""
import copy
import json
import os

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "tiny-sd1", "vae")


def randomise(model, seed):
    """diffusers' init leaves GroupNorm affines at 1 / 0; random affines and biases exercise them, and
    convolutions scaled by 1/sqrt(fan_in) keep activations O(1) through the whole network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(1.2 * torch.randn(p.shape, generator=g) / fan_in**0.5)


def main():
    torch.manual_seed(0)
    config = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        block_out_channels=[16, 32],
        layers_per_block=1,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=0.18215,
    )
    vae = AutoencoderKL(**config).eval()
    randomise(vae, 1)
    os.makedirs(OUT, exist_ok=True)
    vae.save_pretrained(OUT, safe_serialization=True)

    # Reference in float64 from exactly the saved f32 weights.
    ref = copy.deepcopy(vae).double()
    g = torch.Generator().manual_seed(2)
    image = torch.rand((1, 3, 32, 32), generator=g) * 2 - 1
    noise = torch.randn((1, 4, 16, 16), generator=g)
    latents = torch.randn((1, 4, 16, 16), generator=g)
    image_b2 = torch.rand((2, 3, 16, 24), generator=g) * 2 - 1
    latents_b2 = torch.randn((2, 4, 8, 12), generator=g)

    golden = {}
    with torch.no_grad():
        dist = ref.encode(image.double()).latent_dist
        golden["image"] = image
        golden["mean"] = dist.mean
        golden["logvar"] = dist.logvar
        golden["noise"] = noise
        golden["sample"] = dist.mean + dist.std * noise.double()
        golden["latents"] = latents
        golden["decoded"] = ref.decode(latents.double()).sample
        dist = ref.encode(image_b2.double()).latent_dist
        golden["image_b2"] = image_b2
        golden["mean_b2"] = dist.mean
        golden["logvar_b2"] = dist.logvar
        golden["latents_b2"] = latents_b2
        golden["decoded_b2"] = ref.decode(latents_b2.double()).sample
    golden = {k: v.float().contiguous() for k, v in golden.items()}
    save_file(golden, os.path.join(OUT, "golden.safetensors"))

    for k, v in golden.items():
        print(f"{k:12s} {list(v.shape)} std {v.std():.3f} max|.| {v.abs().max():.3f}")
    with open(os.path.join(OUT, "config.json")) as f:
        print(json.dumps(json.load(f), indent=1))
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == "__main__":
    main()
