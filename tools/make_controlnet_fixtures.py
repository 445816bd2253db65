#!/usr/bin/env python3
"""Builds tiny random ControlNets for the tiny SD1 and SDXL fixtures and records diffusers' outputs
for tests/tests/controlnet.rs. Everything goes to tests/fixtures/controlnet/:

  sd1-a/, sd1-b/   diffusers ControlNetModel folders for tests/fixtures/tiny-sd1 (ControlNetModel.from_unet,
                   conditioning_embedding_out_channels (4, 8): the tiny VAE halves the image once), every
                   weight perturbed or randomised (a real ControlNet's zero convs are trained away from
                   zero; zeros would make every residual vanish and the test prove nothing)
  sdxl/            the same for tests/fixtures/tiny-sdxl (a fresh ControlNetModel with the UNet's levels,
                   one transformer layer per block, to stay small)
  sd1-a.safetensors   sd1-a in lllyasviel's original single-file layout (under `control_model.`),
                   checked to convert back exactly with diffusers' convert_controlnet_checkpoint
                   (but for the hint encoder's last conv: see write_single_file)
  control.png      the 32x32 control image (a ring and a bar, like canny edges), at the generation size
                   so no resampling enters the comparison
  residuals.safetensors   ControlNetModel(sd1-a) on random inputs: sample [2, 4, 16, 16], timesteps [2],
                   encoder_hidden_states [2, 77, 32], controlnet_cond [2, 3, 32, 32] in [0, 1], scale 0.7;
                   outputs `plain/down.N`, `plain/mid` and with guess_mode `guess/down.N`, `guess/mid`
  golden.safetensors + cases.json   complete generations: StableDiffusionControlNetPipeline,
                   StableDiffusionControlNetImg2ImgPipeline, StableDiffusionXLControlNetPipeline,
                   4 steps at 32x32, float32 on the CPU, torch.Generator("cpu").manual_seed(seed)
                   (seed + i per image), so kiln's torch-CPU noise is identical; `<case>/image` is
                   output_type="np" [N, H, W, 3]
Weights are rounded to float16 and stored so (half the bytes); the goldens use the rounded values.

Usage: /tmp/venv-vis/bin/python tools/make_controlnet_fixtures.py  (from anywhere)
"""
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLControlNetPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SD1 = os.path.join(FIXTURES, "tiny-sd1")
SDXL = os.path.join(FIXTURES, "tiny-sdxl")
OUT = os.path.join(FIXTURES, "controlnet")
SIZE = 32
STEPS = 4
PROMPT = "a red circle on a blue background"

SAMPLERS = {"Euler": EulerDiscreteScheduler, "Euler a": EulerAncestralDiscreteScheduler}

CASES = [
    dict(name="scale1", controls=[dict(model="sd1-a", scale=1.0)], seed=42),
    # Acts on steps 1 and 2 of 4 only (diffusers' controlnet_keep).
    dict(name="scale05_start02_end08",
         controls=[dict(model="sd1-a", scale=0.5, start=0.2, end=0.8)], seed=43),
    dict(name="guess_mode", controls=[dict(model="sd1-a", scale=1.0)], guess_mode=True, seed=44),
    dict(name="two_controlnets",
         controls=[dict(model="sd1-a", scale=1.0), dict(model="sd1-b", scale=0.6)], seed=45),
    # Two images, each with its own generator; the control image is repeated per row.
    dict(name="batch2_euler_a", controls=[dict(model="sd1-a", scale=0.8)], seed=46, batch=2,
         sampler="Euler a"),
    dict(name="img2img", mode="img2img", controls=[dict(model="sd1-a", scale=1.0)], seed=47,
         strength=0.6),
    dict(name="sdxl", family="sdxl", controls=[dict(model="sdxl", scale=0.8)], seed=48, cfg=5.0),
    dict(name="sdxl_guess", family="sdxl", controls=[dict(model="sdxl", scale=1.0)], seed=49,
         cfg=5.0, guess_mode=True),
]


def perturb(model, seed):
    """Every weight moved off its copy or zero init, deterministically, and rounded to f16."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("controlnet_"):
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(0.6 * torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            else:
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())
    return model.eval()


def save(model, name):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    model.save_config(folder)
    state = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(folder, "diffusion_pytorch_model.safetensors"))


def make_controlnets():
    unet = UNet2DConditionModel.from_pretrained(os.path.join(SD1, "unet"))
    nets = {}
    for name, seed in [("sd1-a", 1), ("sd1-b", 2)]:
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8))
        nets[name] = perturb(net, seed)
    xl = UNet2DConditionModel.from_pretrained(os.path.join(SDXL, "unet"))
    c = xl.config
    torch.manual_seed(3)
    net = ControlNetModel(
        in_channels=c.in_channels, down_block_types=c.down_block_types,
        block_out_channels=c.block_out_channels, layers_per_block=c.layers_per_block,
        norm_num_groups=c.norm_num_groups, cross_attention_dim=c.cross_attention_dim,
        attention_head_dim=c.attention_head_dim, use_linear_projection=c.use_linear_projection,
        addition_embed_type="text_time", addition_time_embed_dim=c.addition_time_embed_dim,
        projection_class_embeddings_input_dim=c.projection_class_embeddings_input_dim,
        transformer_layers_per_block=1, conditioning_embedding_out_channels=(4, 8),
    )
    nets["sdxl"] = perturb(net, 4)
    for name, net in nets.items():
        save(net, name)
    return nets


RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def original_name(key, layers, n_hint_blocks):
    """diffusers ControlNetModel name -> lllyasviel's (without the control_model. prefix)."""
    parts = key.split(".")
    if parts[0] == "time_embedding":
        return f"time_embed.{0 if parts[1] == 'linear_1' else 2}.{parts[2]}"
    if parts[0] == "conv_in":
        return f"input_blocks.0.0.{parts[1]}"
    if parts[0] == "controlnet_cond_embedding":
        if parts[1] == "conv_in":
            return f"input_hint_block.0.{parts[2]}"
        if parts[1] == "conv_out":
            return f"input_hint_block.{2 * (n_hint_blocks + 1)}.{parts[2]}"
        return f"input_hint_block.{2 * (int(parts[2]) + 1)}.{parts[3]}"
    if parts[0] == "controlnet_down_blocks":
        return f"zero_convs.{parts[1]}.0.{parts[2]}"
    if parts[0] == "controlnet_mid_block":
        return f"middle_block_out.0.{parts[1]}"
    if parts[0] == "mid_block":
        kind, j, rest = parts[1], int(parts[2]), parts[3:]
        if kind == "attentions":
            return "middle_block.1." + ".".join(rest)
        return f"middle_block.{2 * j}.{RESNET[rest[0]]}.{rest[1]}"
    if parts[0] == "down_blocks":
        b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        first = 1 + b * (layers + 1)
        if kind == "downsamplers":
            return f"input_blocks.{first + layers}.0.op.{rest[1]}"
        if kind == "attentions":
            return f"input_blocks.{first + j}.1." + ".".join(rest)
        return f"input_blocks.{first + j}.0.{RESNET[rest[0]]}.{rest[1]}"
    raise ValueError(key)


def write_single_file(net, name):
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
    state = net.state_dict()
    layers = net.config.layers_per_block
    n_hint = len(net.controlnet_cond_embedding.blocks)
    original = {"control_model." + original_name(k, layers, n_hint): v.half().contiguous()
                for k, v in state.items()}
    back = convert_controlnet_checkpoint(original, dict(net.config))
    # diffusers names the hint encoder's last conv `input_hint_block.14`, fixed: right for every
    # published file (widths 16, 32, 96, 256: 8 convs), while this tiny one has 4 convs (the tiny VAE
    # halves once), its last at 6, which the converter takes for one more block. kiln takes the last
    # conv as conv_out; everything else must convert back exactly.
    out = {"controlnet_cond_embedding.conv_out.weight", "controlnet_cond_embedding.conv_out.bias"}
    extra = {f"controlnet_cond_embedding.blocks.{n_hint}.{p}" for p in ("weight", "bias")}
    assert set(back) - extra == set(state) - out, set(back) ^ set(state)
    for k, v in state.items():
        if k not in out:
            assert torch.equal(back[k].float(), v), k
    save_file(original, os.path.join(OUT, f"{name}.safetensors"))


def control_image():
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    r = np.sqrt((x - 13) ** 2 + (y - 15) ** 2)
    edges = (np.abs(r - 8) < 1.0) | ((x > 22) & (x < 25) & (y > 4) & (y < 28))
    img = np.where(edges[..., None], 255, 0).astype(np.uint8).repeat(3, -1)
    img[..., 1] = np.where(edges, 200, 30)  # not grey, so the channel order matters
    Image.fromarray(img, "RGB").save(os.path.join(OUT, "control.png"))
    return Image.open(os.path.join(OUT, "control.png")).convert("RGB")


def residuals(net):
    g = torch.Generator().manual_seed(7)
    sample = torch.randn(2, 4, 16, 16, generator=g)
    timesteps = torch.tensor([500.0, 21.5])
    context = torch.randn(2, 77, 32, generator=g)
    cond = torch.rand(2, 3, 32, 32, generator=g)
    out = dict(sample=sample, timesteps=timesteps, encoder_hidden_states=context, controlnet_cond=cond)
    for tag, guess in [("plain", False), ("guess", True)]:
        with torch.no_grad():
            down, mid = net(sample, timesteps, encoder_hidden_states=context, controlnet_cond=cond,
                            conditioning_scale=0.7, guess_mode=guess, return_dict=False)
        for i, d in enumerate(down):
            out[f"{tag}/down.{i}"] = d.contiguous()
        out[f"{tag}/mid"] = mid.contiguous()
    save_file(out, os.path.join(OUT, "residuals.safetensors"))


def pipeline(case, nets):
    family = case.get("family", "sd1")
    models = [nets[c["model"]] for c in case["controls"]]
    controlnet = models[0] if len(models) == 1 else models
    sampler = SAMPLERS[case.get("sampler", "Euler")]
    if family == "sdxl":
        sched = json.load(open(os.path.join(SDXL, "scheduler", "scheduler_config.json")))
        pipe = StableDiffusionXLControlNetPipeline(
            vae=AutoencoderKL.from_pretrained(os.path.join(SDXL, "vae")),
            text_encoder=CLIPTextModel.from_pretrained(os.path.join(SDXL, "text_encoder")),
            text_encoder_2=CLIPTextModelWithProjection.from_pretrained(os.path.join(SDXL, "text_encoder_2")),
            tokenizer=CLIPTokenizer.from_pretrained(os.path.join(SDXL, "tokenizer")),
            tokenizer_2=CLIPTokenizer.from_pretrained(os.path.join(SDXL, "tokenizer_2")),
            unet=UNet2DConditionModel.from_pretrained(os.path.join(SDXL, "unet")),
            controlnet=controlnet, scheduler=sampler.from_config(sched),
        )
    else:
        sched = json.load(open(os.path.join(SD1, "scheduler", "scheduler_config.json")))
        cls = (StableDiffusionControlNetImg2ImgPipeline if case.get("mode") == "img2img"
               else StableDiffusionControlNetPipeline)
        pipe = cls(
            vae=AutoencoderKL.from_pretrained(os.path.join(SD1, "vae")),
            text_encoder=CLIPTextModel.from_pretrained(os.path.join(SD1, "text_encoder")),
            tokenizer=CLIPTokenizer.from_pretrained(os.path.join(SD1, "tokenizer")),
            unet=UNet2DConditionModel.from_pretrained(os.path.join(SD1, "unet")),
            controlnet=controlnet, scheduler=sampler.from_config(sched),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    control = Image.open(os.path.join(OUT, "control.png")).convert("RGB")
    one = len(models) == 1
    pick = lambda key, default: [c.get(key, default) for c in case["controls"]]
    scales, starts, ends = pick("scale", 1.0), pick("start", 0.0), pick("end", 1.0)
    batch = case.get("batch", 1)
    kwargs = dict(
        prompt=case.get("prompt", PROMPT), negative_prompt=case.get("negative", "blurry, dark"),
        num_inference_steps=STEPS, guidance_scale=case.get("cfg", 7.5),
        num_images_per_prompt=batch, height=SIZE, width=SIZE,
        controlnet_conditioning_scale=scales[0] if one else scales,
        control_guidance_start=starts[0] if one else starts,
        control_guidance_end=ends[0] if one else ends,
        guess_mode=case.get("guess_mode", False),
    )
    if case.get("mode") == "img2img":
        kwargs.update(image=Image.open(os.path.join(SD1, "init.png")).convert("RGB"),
                      control_image=control if one else [control] * len(models),
                      strength=case["strength"])
    else:
        kwargs.update(image=control if one else [control] * len(models))

    def generators():
        if batch == 1:
            return torch.Generator("cpu").manual_seed(case["seed"])
        return [torch.Generator("cpu").manual_seed(case["seed"] + i) for i in range(batch)]

    with torch.no_grad():
        image = pipe(**kwargs, generator=generators(), output_type="np").images
    image = torch.from_numpy(np.ascontiguousarray(image)).float()
    assert image.shape == (batch, SIZE, SIZE, 3), image.shape
    print(f"{case['name']}: mean {image.mean():.4f} std {image.std():.4f}")
    return image


def main():
    os.makedirs(OUT, exist_ok=True)
    nets = make_controlnets()
    write_single_file(nets["sd1-a"], "sd1-a")
    control_image()
    residuals(nets["sd1-a"])
    golden = {}
    for case in CASES:
        golden[f"{case['name']}/image"] = pipeline(case, nets)
    # Without the ControlNet, for the test that the residuals change the image.
    save_file(golden, os.path.join(OUT, "golden.safetensors"))
    defaults = dict(family="sd1", mode="txt2img", sampler="Euler", batch=1, cfg=7.5, prompt=PROMPT,
                    negative="blurry, dark", guess_mode=False, steps=STEPS, width=SIZE, height=SIZE,
                    strength=1.0)
    cases = []
    for c in CASES:
        c = {**defaults, **c}
        c["controls"] = [{"start": 0.0, "end": 1.0, **u} for u in c["controls"]]
        cases.append(c)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
