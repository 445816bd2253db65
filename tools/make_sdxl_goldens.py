#!/usr/bin/env python3
"""Records diffusers' / transformers' outputs on the tiny SDXL fixture (tests/fixtures/tiny-sdxl/,
made by tools/make_sdxl_fixtures.py) for kiln's golden tests:

  unet/golden.safetensors            one UNet evaluation with added conditioning (tests/tests/unet.rs):
      sample F32 [2, 4, 8, 8], timesteps F32 [2], encoder_hidden_states F32 [2, 77, 80],
      text_embeds F32 [2, 40], time_ids F32 [2, 6], out F32 [2, 4, 8, 8]
  text_encoder/golden.safetensors    CLIPTextModel (tests/tests/clip.rs): input_ids I64 [2, 77],
      hidden_states_m2 F32 [2, 77, 32] (hidden_states[-2], no final LayerNorm),
      hidden_states_m3 F32 [2, 77, 32] (hidden_states[-3])
  text_encoder_2/golden.safetensors  CLIPTextModelWithProjection: input_ids, hidden_states_m2,
      hidden_states_m3 (48 wide) and text_embeds F32 [2, 40] (the projected pooled output)
  encode_prompt.safetensors          StableDiffusionXLPipeline.encode_prompt for PROMPT and NEGATIVE:
      prompt_embeds [1, 77, 80], pooled [1, 40], negative_prompt_embeds, negative_pooled
  pipeline_golden.safetensors + pipeline_cases.json   complete generations (tests/tests/sdxl.rs):
      <case>/image F32 [N, H, W, 3] (output_type="np"), <case>/latents F32 [N, 4, h, w];
      img2img and inpainting use tests/fixtures/tiny-sd1/{init,mask}.png (32x32)
The text encoder goldens are computed in float64 from the saved f32 weights; the UNet and the
pipelines run in float32 on the CPU, seeds fed to torch.Generator("cpu").manual_seed (seed + i per
image of a batch).

Empty negative prompts: diffusers zeroes the negative conditioning when `negative_prompt` is None
(force_zeros_for_empty_prompt), and A1111 zeroes it when the negative prompt is "" (sd_models_xl.py,
force_zero_negative_prompt); kiln follows both, so a case with negative "" runs diffusers with
negative_prompt=None. diffusers given negative_prompt="" would encode the empty string instead.

Usage: /tmp/venv-vis/bin/python tools/make_sdxl_goldens.py  (from anywhere)
"""
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FX = os.path.join(ROOT, "tests", "fixtures", "tiny-sdxl")
INIT = os.path.join(ROOT, "tests", "fixtures", "tiny-sd1", "init.png")
MASK = os.path.join(ROOT, "tests", "fixtures", "tiny-sd1", "mask.png")

PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry, dark"
SIZE = 32
STEPS = 4

SAMPLERS = {
    "Euler": EulerDiscreteScheduler,
    "Euler a": EulerAncestralDiscreteScheduler,
    "DPM++ 2M": DPMSolverMultistepScheduler,
}

# clip_skip is kiln's / A1111's (1 = the default layer, SDXL's penultimate); diffusers' is one less.
CASES = [
    dict(name="txt2img_euler", mode="txt2img", sampler="Euler", prompt=PROMPT, negative=NEGATIVE,
         cfg=5.0, seed=42),
    # An empty negative prompt: zeroed conditioning on both sides (see the docstring).
    dict(name="txt2img_dpmpp_2m_empty_negative", mode="txt2img", sampler="DPM++ 2M", prompt=PROMPT,
         negative="", cfg=7.0, seed=1234),
    # guidance <= 1: no unconditional pass; hidden_states[-3] of both encoders.
    dict(name="txt2img_euler_nocfg_clipskip2", mode="txt2img", sampler="Euler",
         prompt="green square, white background", negative="", cfg=1.0, seed=7, clip_skip=2),
    # Two images (seeds 100, 101): pooled embeddings and time ids per image; not square.
    dict(name="txt2img_euler_a_batch2_48x32", mode="txt2img", sampler="Euler a", prompt=PROMPT,
         negative="ugly", cfg=6.0, seed=100, batch=2, width=48, height=32),
    dict(name="img2img_euler", mode="img2img", sampler="Euler", prompt=PROMPT, negative=NEGATIVE,
         cfg=5.0, seed=42, strength=0.6),
    dict(name="img2img_dpmpp_2m", mode="img2img", sampler="DPM++ 2M", prompt=PROMPT,
         negative="blurry", cfg=7.5, seed=3, strength=0.75),
    # Textual inversion (tiny-sdxl/embeddings, written by write_embeddings): an SDXL file's clip_l
    # vectors go to text_encoder and its clip_g vectors to text_encoder_2, as diffusers loads them
    # with load_textual_inversion(..., text_encoder=..., tokenizer=...) once per encoder.
    dict(name="ti_txt2img_euler", mode="txt2img", sampler="Euler",
         prompt="a kilnxl circle on a blue background", negative="blurry kilnxl", cfg=5.0, seed=77,
         embeddings=["kilnxl"]),
    # The 4-channel UNet: latents blended with the noised image outside the mask.
    dict(name="inpaint4_euler", mode="inpaint", sampler="Euler", prompt=PROMPT, negative=NEGATIVE,
         cfg=5.0, seed=12, strength=0.75),
]


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def ids_for(tokenizer, prompts):
    return tokenizer(prompts, padding="max_length", max_length=77, truncation=True,
                     return_tensors="pt").input_ids


def unet_golden():
    model = UNet2DConditionModel.from_pretrained(os.path.join(FX, "unet")).eval()
    g = torch.Generator().manual_seed(3001)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    timesteps = torch.tensor([999.0, 10.0])
    ehs = torch.randn(2, 77, 80, generator=g)
    text_embeds = torch.randn(2, 40, generator=g)
    time_ids = torch.tensor([[32.0, 32, 0, 0, 32, 32], [1024.0, 768, 16, 8, 896, 640]])
    with torch.no_grad():
        out = model(sample, timesteps, ehs,
                    added_cond_kwargs=dict(text_embeds=text_embeds, time_ids=time_ids)).sample
    save_file(dict(sample=sample, timesteps=timesteps, encoder_hidden_states=ehs,
                   text_embeds=text_embeds, time_ids=time_ids, out=out.contiguous()),
              os.path.join(FX, "unet", "golden.safetensors"))
    print("unet: out std", float(out.std()), "max", float(out.abs().max()))


def text_encoder_goldens():
    prompts = [PROMPT, "green square, white background, a tree and a house"]
    for folder, tok_folder, cls in [("text_encoder", "tokenizer", CLIPTextModel),
                                    ("text_encoder_2", "tokenizer_2", CLIPTextModelWithProjection)]:
        tok = CLIPTokenizer.from_pretrained(os.path.join(FX, tok_folder))
        ids = ids_for(tok, prompts)
        model = cls.from_pretrained(os.path.join(FX, folder)).eval().double()
        with torch.no_grad():
            o = model(input_ids=ids, output_hidden_states=True)
        golden = dict(input_ids=ids.contiguous(),
                      hidden_states_m2=o.hidden_states[-2].float().contiguous(),
                      hidden_states_m3=o.hidden_states[-3].float().contiguous())
        if cls is CLIPTextModelWithProjection:
            golden["text_embeds"] = o.text_embeds.float().contiguous()
        save_file(golden, os.path.join(FX, folder, "golden.safetensors"))
        print(folder, {k: tuple(v.shape) for k, v in golden.items()}, "pad", ids[0, -1].item())


def write_embeddings():
    """kilnxl.safetensors: SDXL's layout, 2 vectors for each encoder (32 and 48 wide)."""
    out = os.path.join(FX, "embeddings")
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(5151)
    save_file({"clip_l": torch.randn(2, 32, generator=g), "clip_g": torch.randn(2, 48, generator=g)},
              os.path.join(out, "kilnxl.safetensors"))


def load_embeddings(pipe, names):
    """Adds each embedding's tokens to both tokenizers and encoders. transformers' CLIP with the
    legacy eos_token_id 2 (SDXL's published configs, and this fixture's) pools at the HIGHEST token
    id, which is then an added embedding token rather than EOS; A1111 (placeholder ids 0) and kiln
    pool at EOS. So that the golden shows the embedding's effect and not that quirk, the encoders
    are told the real EOS id, which makes transformers pool at the first EOS."""
    from safetensors.torch import load_file
    if names:
        for tokenizer, encoder in [(pipe.tokenizer, pipe.text_encoder),
                                   (pipe.tokenizer_2, pipe.text_encoder_2)]:
            getattr(encoder, "text_model", encoder).eos_token_id = tokenizer.eos_token_id
    for name in names:
        tensors = load_file(os.path.join(FX, "embeddings", f"{name}.safetensors"))
        pipe.load_textual_inversion(tensors["clip_l"], token=name, text_encoder=pipe.text_encoder,
                                    tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(tensors["clip_g"], token=name, text_encoder=pipe.text_encoder_2,
                                    tokenizer=pipe.tokenizer_2)


def pipeline(cls, sampler):
    pipe = cls.from_pretrained(FX, add_watermarker=False)
    pipe.scheduler = SAMPLERS[sampler].from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode_prompt_golden():
    pipe = pipeline(StableDiffusionXLPipeline, "Euler")
    with torch.no_grad():
        pe, npe, pooled, npooled = pipe.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1,
                                                      do_classifier_free_guidance=True,
                                                      negative_prompt=NEGATIVE)
    save_file(dict(prompt_embeds=pe.contiguous(), pooled=pooled.contiguous(),
                   negative_prompt_embeds=npe.contiguous(), negative_pooled=npooled.contiguous()),
              os.path.join(FX, "encode_prompt.safetensors"))
    print("encode_prompt", tuple(pe.shape), tuple(pooled.shape))


def run(case):
    cls = {"txt2img": StableDiffusionXLPipeline, "img2img": StableDiffusionXLImg2ImgPipeline,
           "inpaint": StableDiffusionXLInpaintPipeline}[case["mode"]]
    pipe = pipeline(cls, case["sampler"])
    load_embeddings(pipe, case.get("embeddings", []))
    batch = case.get("batch", 1)
    width, height = case.get("width", SIZE), case.get("height", SIZE)
    kwargs = dict(prompt=case["prompt"], num_inference_steps=STEPS, guidance_scale=case["cfg"],
                  num_images_per_prompt=batch)
    if case["negative"]:
        kwargs["negative_prompt"] = case["negative"]
    if case.get("clip_skip", 1) > 1:
        kwargs["clip_skip"] = case["clip_skip"] - 1
        assert case["cfg"] <= 1.0  # diffusers applies clip_skip to the prompt only
    if case["mode"] == "txt2img":
        kwargs.update(height=height, width=width)
    else:
        kwargs.update(image=Image.open(INIT).convert("RGB"), strength=case["strength"])
    if case["mode"] == "inpaint":
        kwargs.update(mask_image=Image.open(MASK).convert("L"), height=height, width=width)

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
    unet_golden()
    text_encoder_goldens()
    encode_prompt_golden()
    write_embeddings()
    golden = {}
    for case in CASES:
        golden.update(run(case))
    save_file(golden, os.path.join(FX, "pipeline_golden.safetensors"))
    defaults = dict(steps=STEPS, width=SIZE, height=SIZE, batch=1, clip_skip=1, strength=1.0,
                    embeddings=[])
    write_json(os.path.join(FX, "pipeline_cases.json"), {"cases": [{**defaults, **c} for c in CASES]})


if __name__ == "__main__":
    main()
