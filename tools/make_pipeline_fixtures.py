#!/usr/bin/env python3
"""Builds the tiny Stable Diffusion pipeline fixture and the complete-generation goldens that
tests/tests/pipeline.rs compares kiln's pipelines with.

The pipeline is assembled from the committed tiny components in tests/fixtures/tiny-sd1/:
  unet/, vae/           written by tools/make_unet_fixtures.py and tools/make_vae_fixtures.py;
  text_encoder/         written by tools/make_clip_fixtures.py (built here only if absent: a
                        3-layer, 32-wide quick_gelu CLIPTextModel with a 1000-token vocabulary);
and this script adds what turns them into a diffusers folder:
  tokenizer/            vocab.json + merges.txt + tokenizer_config.json: OpenAI CLIP's BPE cut to the text encoder's
                        vocabulary size (the first vocab_size - 514 merges of
                        models/assets/clip_bpe_merges.txt.gz, then the two specials last, as the
                        real vocabulary orders them), so every id fits the tiny embedding table;
  scheduler/            SD 1.5's scheduler_config.json (PNDMScheduler, as written on the hub);
  model_index.json      a StableDiffusionPipeline with no safety checker.
Inpainting uses the same text encoder, tokenizer and VAE with tests/fixtures/tiny-sd1-inpaint/unet.
The SD 2.x-style cases use tests/fixtures/tiny-sd2/{unet,text_encoder} (linear projections, gelu)
with tiny-sd1's VAE, plus what this script writes there: tokenizer/ (the same cut vocabulary, padding
with "!" as SD 2.x's tokenizer does) and scheduler/ (SD 2.1's config: DDIM, v_prediction). It has
no VAE of its own, so it is not a complete folder (no model_index.json); tests assemble it.

It then runs diffusers' StableDiffusionPipeline / Img2ImgPipeline / InpaintPipeline in float32 on
the CPU with torch.Generator("cpu").manual_seed(seed) (a list of generators, seed + i, for batches,
which is how kiln seeds each image) and records, per case (see pipeline_cases.json):
  <case>/image    F32 [N, H, W, 3]  output_type="np": clamp(decoded / 2 + 0.5, 0, 1), before 8-bit
  <case>/latents  F32 [N, 4, h, w]  the final latents (output_type="latent"), for diagnosis
in tests/fixtures/tiny-sd1/pipeline_golden.safetensors, and the init image and mask as
init.png / mask.png (32x32) beside it.

Usage: /work/main/.venv/bin/python tools/make_pipeline_fixtures.py  (from anywhere)
"""
import gzip
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
FX = os.path.join(FIXTURES, "tiny-sd1")
MERGES_GZ = os.path.join(ROOT, "models", "assets", "clip_bpe_merges.txt.gz")

# SD 1.5's scheduler/scheduler_config.json as published (no timestep_spacing: each sampler class
# then uses its own default, as `Sampler.from_config(pipe.scheduler.config)` does).
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

# SD 2.1 (768, v-prediction)'s scheduler_config.json as published.
SD21_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SCHEDULERS = {"tiny-sd1": SD15_SCHEDULER, "tiny-sd2": SD21_SCHEDULER}

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

SAMPLERS = {
    "Euler": EulerDiscreteScheduler,
    "Euler a": EulerAncestralDiscreteScheduler,
    "DPM++ 2M": DPMSolverMultistepScheduler,
    "Heun": HeunDiscreteScheduler,
    "DPM++ SDE": DPMSolverSDEScheduler,
}

SIZE = 32
STEPS = 4
PROMPT = "a red circle on a blue background"

# Every case runs 4 steps, at 32x32 unless it says otherwise. clip_skip is A1111's (1 = last layer); diffusers' is one less.
CASES = [
    dict(name="txt2img_euler", mode="txt2img", sampler="Euler", prompt=PROMPT,
         negative="blurry, dark", cfg=7.5, seed=42),
    dict(name="txt2img_dpmpp_2m", mode="txt2img", sampler="DPM++ 2M", prompt=PROMPT,
         negative="", cfg=5.0, seed=1234),
    # guidance <= 1: no unconditional pass; clip skip 2.
    dict(name="txt2img_euler_nocfg_clipskip2", mode="txt2img", sampler="Euler",
         prompt="green square, white background", negative="", cfg=1.0, seed=7, clip_skip=2),
    # Two images from seeds 100 and 101, each with its own generator for the initial latents and
    # for Euler a's per-step noise.
    dict(name="txt2img_euler_a_batch2", mode="txt2img", sampler="Euler a", prompt=PROMPT,
         negative="", cfg=7.5, seed=100, batch=2),
    dict(name="img2img_euler", mode="img2img", sampler="Euler", prompt=PROMPT,
         negative="", cfg=7.5, seed=42, strength=0.6),
    dict(name="img2img_dpmpp_2m", mode="img2img", sampler="DPM++ 2M", prompt=PROMPT,
         negative="blurry", cfg=7.5, seed=3, strength=0.6),
    # Two model evaluations per step (scheduler.order = 2, 7 timesteps for 4 steps): img2img
    # skips 2 entries per skipped step, and inpainting blends after each of them.
    dict(name="img2img_heun", mode="img2img", sampler="Heun", prompt=PROMPT,
         negative="", cfg=7.5, seed=5, strength=0.6),
    dict(name="inpaint4_heun", mode="inpaint", sampler="Heun", prompt=PROMPT,
         negative="", cfg=7.5, seed=15, strength=0.75),
    # Brownian-tree noise seeded with the image's seed (diffusers' noise_sampler_seed).
    dict(name="img2img_dpmpp_sde", mode="img2img", sampler="DPM++ SDE", prompt=PROMPT,
         negative="", cfg=7.5, seed=9, strength=0.8),
    # The 9-channel inpainting UNet (latents + mask + masked-image latents).
    # Euler a: its step noise comes after the initial noise and the masked image's VAE sample.
    dict(name="inpaint9_euler_a", mode="inpaint", unet="tiny-sd1-inpaint", sampler="Euler a",
         prompt=PROMPT, negative="", cfg=7.5, seed=11, strength=1.0),
    # An ordinary 4-channel UNet: latents blended with the noised image outside the mask.
    # Not square, and a latent size (20x12) that the inpainting UNet's three downsamplings do not
    # divide: 20x12 -> 10x6 -> 5x3 -> 3x2, restored to each skip's size on the way up.
    dict(name="inpaint9_euler_odd_latents", mode="inpaint", unet="tiny-sd1-inpaint", sampler="Euler",
         prompt=PROMPT, negative="", cfg=7.5, seed=14, strength=1.0, width=40, height=24,
         images="_40x24"),
    dict(name="inpaint4_dpmpp_2m", mode="inpaint", sampler="DPM++ 2M", prompt=PROMPT,
         negative="", cfg=7.5, seed=12, strength=0.75),
    # ... where diffusers still draws (and discards) the masked image's VAE sample before Euler a's
    # step noise.
    dict(name="inpaint4_euler_a", mode="inpaint", sampler="Euler a", prompt=PROMPT,
         negative="blurry", cfg=7.5, seed=13, strength=0.75),
    # SD 2.x style (tests/fixtures/tiny-sd2): linear projections, per-block head counts, a gelu
    # text encoder, "!" padding (and "!" typed in a prompt is that special token), v-prediction.
    dict(name="sd2_txt2img_euler", family="tiny-sd2", unet="tiny-sd2", mode="txt2img",
         sampler="Euler", prompt=PROMPT + "!!", negative="ugly!", cfg=7.5, seed=21),
    dict(name="sd2_img2img_dpmpp_2m", family="tiny-sd2", unet="tiny-sd2", mode="img2img",
         sampler="DPM++ 2M", prompt=PROMPT, negative="", cfg=6.0, seed=22, strength=0.6),
    # Textual inversion (tiny-sd1/embeddings, written by write_embeddings): three file layouts,
    # in the prompt and the negative prompt, loaded into diffusers with load_textual_inversion.
    dict(name="ti_txt2img_euler", mode="txt2img", sampler="Euler",
         prompt="a kilnstyle circle on a kilntrio background", negative="blurry kilnglow",
         cfg=7.5, seed=31, embeddings=["kilnstyle", "kilnglow", "kilntrio"]),
]

# Textual-inversion files in the layouts people have: diffusers' {token: [n, d]}, kohya's
# `emb_params`, A1111's `string_to_param.*`; and one 24 wide, which the 32-wide encoder refuses.
EMBEDDINGS = {
    "kilnstyle": ("kilnstyle", 2, 32),
    "kilnglow": ("emb_params", 1, 32),
    "kilntrio": ("string_to_param.*", 3, 32),
    "kilnwide": ("emb_params", 1, 24),
}


def write_embeddings():
    out = os.path.join(FX, "embeddings")
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(4242)
    for name, (key, n, width) in EMBEDDINGS.items():
        save_file({key: torch.randn(n, width, generator=g)}, os.path.join(out, f"{name}.safetensors"))


def embedding_vectors(name):
    from safetensors.torch import load_file
    (tensor,) = load_file(os.path.join(FX, "embeddings", f"{name}.safetensors")).values()
    return tensor


def ensure_text_encoder():
    """The CLIP fixture normally exists; if not, a text encoder shaped like it."""
    out = os.path.join(FX, "text_encoder")
    if os.path.exists(os.path.join(out, "config.json")):
        return
    config = CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=37,
                            num_attention_heads=4, num_hidden_layers=3, max_position_embeddings=77,
                            hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=32,
                            bos_token_id=0, eos_token_id=2, pad_token_id=1)
    torch.manual_seed(1234)
    model = CLIPTextModel(config).eval()
    g = torch.Generator().manual_seed(1235)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(1.5 * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    model.save_pretrained(out, safe_serialization=True)


def byte_symbols():
    """GPT-2/CLIP's byte -> printable character table (the order fixes the first 256 ids)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer(family, vocab_size, pad_token):
    with gzip.open(MERGES_GZ, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert lines[0].startswith("#version")
    n_merges = vocab_size - 512 - 2
    merges = [tuple(line.split(" ")) for line in lines[1 : 1 + n_merges]]
    symbols = byte_symbols()
    entries = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges]
    entries += ["<|startoftext|>", "<|endoftext|>"]
    assert len(entries) == vocab_size and len(set(entries)) == vocab_size
    out = os.path.join(FIXTURES, family, "tokenizer")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(entries)}, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    # SD 1.5's / 2.1's tokenizer_config.json (2.1 pads with "!"); without model_max_length,
    # padding="max_length" has no length.
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    })
    tok = CLIPTokenizer.from_pretrained(out)
    ids = tok(PROMPT, padding="max_length", max_length=77, truncation=True).input_ids
    assert ids[0] == vocab_size - 2 and max(ids) == vocab_size - 1, ids
    assert ids[-1] == tok.convert_tokens_to_ids(pad_token), ids
    print(f"{family} tokenizer:", vocab_size, "entries;", PROMPT, "->", ids[: ids.index(vocab_size - 1) + 2])


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def make_images(width=SIZE, height=SIZE, suffix=""):
    """An init image (a yellow disc on a gradient) and a mask (white = repaint) of a centre
    rectangle, at the generation size so that no resampling (PIL's and kiln's Lanczos differ)
    enters the comparison."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / (width - 1) * 200 + 20, y / (height - 1) * 150 + 50, 255 - x * 4], -1)
    disc = (x - 12) ** 2 + (y - 18) ** 2 < 64
    rgb[disc] = [250, 230, 20]
    init = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4:height * 3 // 4, 10:width * 13 // 16] = 255
    mask = Image.fromarray(mask, "L")
    init.save(os.path.join(FX, f"init{suffix}.png"))
    mask.save(os.path.join(FX, f"mask{suffix}.png"))
    return init, mask


def components(family, unet):
    """The text encoder, tokenizer and scheduler of `family`, the UNet of folder `unet`, and
    tiny-sd1's VAE (SD 2.x uses SD 1.x's VAE architecture)."""
    folder = os.path.join(FIXTURES, family)
    return dict(
        vae=AutoencoderKL.from_pretrained(os.path.join(FX, "vae")),
        text_encoder=CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer")),
        unet=UNet2DConditionModel.from_pretrained(os.path.join(FIXTURES, unet, "unet")),
        scheduler=EulerDiscreteScheduler.from_config(SCHEDULERS[family]),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def run(case, init, mask):
    family = case.get("family", "tiny-sd1")
    cls = {
        "txt2img": StableDiffusionPipeline,
        "img2img": StableDiffusionImg2ImgPipeline,
        "inpaint": StableDiffusionInpaintPipeline,
    }[case["mode"]]
    pipe = cls(**components(family, case.get("unet", family)))
    sampler_cls = SAMPLERS[case["sampler"]]
    extra = {}
    if sampler_cls is DPMSolverSDEScheduler:
        # Its Brownian tree is seeded by the scheduler, not the generator; kiln seeds it with
        # the image's seed.
        extra["noise_sampler_seed"] = case["seed"]
    pipe.scheduler = sampler_cls.from_config(SCHEDULERS[family], **extra)
    pipe.set_progress_bar_config(disable=True)
    for name in case.get("embeddings", []):
        pipe.load_textual_inversion(embedding_vectors(name), token=name)
    batch = case.get("batch", 1)
    clip_skip = case.get("clip_skip", 1)
    kwargs = dict(
        prompt=case["prompt"],
        negative_prompt=case["negative"],
        num_inference_steps=STEPS,
        guidance_scale=case["cfg"],
        num_images_per_prompt=batch,
    )
    if clip_skip > 1:
        # diffusers' own clip_skip reaches for `text_encoder.text_model`, which transformers 5's
        # CLIPTextModel no longer has; its computation, done here: final_layer_norm of hidden state
        # -clip_skip. (diffusers applies it to the prompt only; the case runs without guidance.)
        assert case["cfg"] <= 1.0
        ids = pipe.tokenizer(kwargs.pop("prompt"), padding="max_length", max_length=77,
                             truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states
            kwargs["prompt_embeds"] = pipe.text_encoder.final_layer_norm(hidden[-clip_skip])
        kwargs.pop("negative_prompt")
    width, height = case.get("width", SIZE), case.get("height", SIZE)
    if case["mode"] == "txt2img":
        kwargs.update(height=height, width=width)
    if case["mode"] in ("img2img", "inpaint"):
        kwargs.update(image=init, strength=case["strength"])
    if case["mode"] == "inpaint":
        kwargs.update(mask_image=mask, height=height, width=width)

    def generators():
        if batch == 1:
            return torch.Generator("cpu").manual_seed(case["seed"])
        return [torch.Generator("cpu").manual_seed(case["seed"] + i) for i in range(batch)]

    with torch.no_grad():
        image = pipe(**kwargs, generator=generators(), output_type="np").images
        latents = pipe(**kwargs, generator=generators(), output_type="latent").images
    image = torch.from_numpy(np.ascontiguousarray(image)).float()
    assert image.shape == (batch, height, width, 3), image.shape
    print(f"{case['name']}: image {tuple(image.shape)} mean {image.mean():.4f} std {image.std():.4f}")
    return {f"{case['name']}/image": image, f"{case['name']}/latents": latents.float().contiguous()}


def main():
    ensure_text_encoder()
    for family, pad in [("tiny-sd1", "<|endoftext|>"), ("tiny-sd2", "!")]:
        with open(os.path.join(FIXTURES, family, "text_encoder", "config.json")) as f:
            vocab_size = json.load(f)["vocab_size"]
        write_tokenizer(family, vocab_size, pad)
        os.makedirs(os.path.join(FIXTURES, family, "scheduler"), exist_ok=True)
        write_json(os.path.join(FIXTURES, family, "scheduler", "scheduler_config.json"),
                   SCHEDULERS[family])
    write_json(os.path.join(FX, "model_index.json"), MODEL_INDEX)
    # The folder must load as a diffusers pipeline by itself.
    StableDiffusionPipeline.from_pretrained(FX)

    write_embeddings()
    golden = {}
    for case in CASES:
        init, mask = make_images(case.get("width", SIZE), case.get("height", SIZE),
                                 case.get("images", ""))
        golden.update(run(case, init, mask))
    save_file(golden, os.path.join(FX, "pipeline_golden.safetensors"))
    defaults = dict(steps=STEPS, width=SIZE, height=SIZE, batch=1, clip_skip=1, family="tiny-sd1",
                    images="", embeddings=[])
    cases = [{**defaults, **c} for c in CASES]
    for c in cases:
        c.setdefault("unet", c["family"])
    write_json(os.path.join(FX, "pipeline_cases.json"), {"cases": cases})


if __name__ == "__main__":
    main()
