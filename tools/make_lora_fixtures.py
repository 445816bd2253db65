#!/usr/bin/env python3
"""Small random LoRAs for the tiny SD1 pipeline (tests/fixtures/tiny-sd1) in the formats people
have, and diffusers' generations with them, for tests/tests/lora.rs.

Writes tests/fixtures/tiny-sd1/loras/:
  peft.safetensors    diffusers / PEFT keys (`unet.<module>.lora_A.weight`, `text_encoder.*`):
                      peft LoraConfig(r=4, lora_alpha=8) on the UNet's attention, feed-forward and
                      projection Linears and the text encoder's attention / MLP Linears, saved by
                      StableDiffusionPipeline.save_lora_weights with the adapter metadata (alpha).
  kohya.safetensors   kohya / A1111 keys (`lora_unet_<path_with_underscores>.lora_down.weight`,
                      `.lora_up.weight`, `.alpha`; `lora_te_*`) written here: rank 4, alpha 2, on
                      the same modules plus the resnets' time_emb_proj.
  locon.safetensors   LyCORIS LoCon in kohya keys: 3x3 `lora_down` / 1x1 `lora_up` on the resnets'
                      conv1 / conv2, the stride-2 downsampler and the 1x1 conv_shortcut, plus a
                      Linear (rank 2, alpha 1).
and lora_golden.safetensors + lora_cases.json (with each file's A1111 `addnet` hash) beside them: per case, `<case>/image` F32 [1, H, W, 3]
(output_type="np") of StableDiffusionPipeline (Euler, 4 steps, 32x32, float32 on the CPU,
torch.Generator("cpu").manual_seed(seed)) after pipe.load_lora_weights(file, adapter_name=stem)
and pipe.set_adapters(names, adapter_weights=...) -- set_adapters scales the UNet and the text
encoder alike (a dict {"text_encoder": a, "unet": b} for A1111's <lora:name:te:unet> form).
Each case's kiln prompt carries the <lora:...> tags; diffusers gets the prompt without them.

Usage: /tmp/venv-vis/bin/python tools/make_lora_fixtures.py  (from anywhere; after
tools/make_pipeline_fixtures.py has written the pipeline folder)
"""
import json
import os

import numpy as np
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
import transformers.integrations.peft as transformers_peft

# transformers 5.25 asks for peft >= 0.22, which PyPI does not have (0.21.2 is the newest); its
# adapter loading works with 0.21 for these plain LoRA Linears, so the version gate is lifted here.
transformers_peft.check_peft_version = lambda min_version: None

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FX = os.path.join(ROOT, "tests", "fixtures", "tiny-sd1")
OUT = os.path.join(FX, "loras")

UNET_LINEARS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TE_LINEARS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
PROMPT = "a red circle on a blue background"

CASES = [
    dict(name="peft_w1", prompt=PROMPT + " <lora:peft>", loras={"peft": 1.0}),
    dict(name="peft_w05", prompt="<lora:peft:0.5>" + PROMPT, loras={"peft": 0.5}),
    dict(name="kohya_w1", prompt=PROMPT + " <lora:kohya:1.0>", loras={"kohya": 1.0}),
    dict(name="kohya_w05", prompt=PROMPT + " <lora:kohya:0.5>", loras={"kohya": 0.5}),
    dict(name="locon_w1", prompt=PROMPT + " <lora:locon:1>", loras={"locon": 1.0}),
    dict(name="locon_w05", prompt=PROMPT + " <lora:locon:0.5>", loras={"locon": 0.5}),
    # Two at once, one tag in the negative prompt (A1111 reads both).
    dict(name="peft_kohya", prompt=PROMPT + " <lora:peft:0.5>", negative="blurry <lora:kohya:1>",
         loras={"peft": 0.5, "kohya": 1.0}),
    # A1111's positional text-encoder / UNet weights.
    dict(name="kohya_te02_unet1", prompt=PROMPT + " <lora:kohya:0.2:1.0>",
         loras={"kohya": {"text_encoder": 0.2, "unet": 1.0}}),
]


def load_pipe():
    pipe = StableDiffusionPipeline.from_pretrained(FX, safety_checker=None)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def fill(sd, g, scale):
    """Random A/B (PEFT initialises B to zero: an adapter that would change nothing)."""
    for k, v in sd.items():
        fan_in = v[0].numel()
        v.copy_(scale * torch.randn(v.shape, generator=g) / fan_in ** 0.5)


def kohya_name(prefix, module):
    return prefix + module.replace(".", "_")


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
    unet_sd = get_peft_model_state_dict(pipe.unet)
    te_sd = get_peft_model_state_dict(pipe.text_encoder)
    with torch.no_grad():
        fill(unet_sd, g, 0.6)
        fill(te_sd, g, 0.6)
    StableDiffusionPipeline.save_lora_weights(
        OUT, unet_lora_layers=unet_sd, text_encoder_lora_layers=te_sd,
        unet_lora_adapter_metadata=portable(config_u),
        text_encoder_lora_adapter_metadata=portable(config_t),
        weight_name="peft.safetensors", safe_serialization=True)
    return len(unet_sd) + len(te_sd)


def modules(model, suffixes, kind):
    return [n for n, m in model.named_modules()
            if isinstance(m, kind) and any(n.endswith(s) for s in suffixes)]


def make_kohya(g, name, targets, rank, alpha):
    """`targets`: (kohya prefix, module name, module) triples."""
    sd = {}
    for prefix, module, m in targets:
        key = kohya_name(prefix, module)
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


def triples(pipe, unet_suffixes, te_suffixes, kinds):
    named_u = dict(pipe.unet.named_modules())
    named_t = dict(pipe.text_encoder.named_modules())
    out = [("lora_unet_", n, named_u[n]) for n in modules(pipe.unet, unet_suffixes, kinds)]
    # kohya writes transformers 4's names (`text_model.encoder...`); transformers 5's CLIPTextModel
    # dropped the `text_model` level and diffusers strips it when loading.
    te = "lora_te_" if hasattr(pipe.text_encoder, "text_model") else "lora_te_text_model_"
    out += [(te, n, named_t[n]) for n in modules(pipe.text_encoder, te_suffixes, kinds)]
    return out


def lora_params(pipe, adapter):
    """How many LoRA tensors of `adapter` diffusers loaded (every key must have landed)."""
    return sum(len(get_peft_model_state_dict(m, adapter_name=adapter))
               for m in (pipe.unet, pipe.text_encoder)
               if adapter in getattr(m, "peft_config", {}))


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(2024)
    expected = {"peft": make_peft(g)}
    base = load_pipe()
    lin = torch.nn.Linear
    expected["kohya"] = make_kohya(
        g, "kohya", triples(base, UNET_LINEARS + ["time_emb_proj"], TE_LINEARS, lin), 4, 2.0)
    conv = triples(base, ["conv1", "conv2", "conv_shortcut", "downsamplers.0.conv"], [],
                   torch.nn.Conv2d)
    conv += triples(base, ["attentions.0.proj_in"], [], (torch.nn.Conv2d, lin))[:1]
    assert any(m.kernel_size == (3, 3) and m.stride == (2, 2) for _, _, m in conv
               if isinstance(m, torch.nn.Conv2d))
    expected["locon"] = make_kohya(g, "locon", conv, 2, 1.0)

    golden = {}
    cases = []
    for case in CASES:
        pipe = load_pipe()
        names = list(case["loras"])
        for n in names:
            pipe.load_lora_weights(OUT, weight_name=f"{n}.safetensors", adapter_name=n)
            assert lora_params(pipe, n) == expected[n], (n, lora_params(pipe, n), expected[n])
        pipe.set_adapters(names, adapter_weights=[case["loras"][n] for n in names])
        gen = torch.Generator("cpu").manual_seed(42)
        negative = case.get("negative", "")
        with torch.no_grad():
            image = pipe(prompt=strip(case["prompt"]), negative_prompt=strip(negative),
                         num_inference_steps=4, guidance_scale=7.5, height=32, width=32,
                         generator=gen, output_type="np").images
        image = torch.from_numpy(np.ascontiguousarray(image)).float()
        golden[f"{case['name']}/image"] = image
        cases.append(dict(name=case["name"], prompt=case["prompt"], negative=negative, seed=42,
                          steps=4, cfg=7.5, width=32, height=32, sampler="Euler"))
        print(case["name"], "mean", float(image.mean()), "std", float(image.std()))
    # The same seed without adapters, so the test can show the adapters change the image.
    pipe = load_pipe()
    with torch.no_grad():
        image = pipe(prompt=PROMPT, negative_prompt="", num_inference_steps=4, guidance_scale=7.5,
                     height=32, width=32, generator=torch.Generator("cpu").manual_seed(42),
                     output_type="np").images
    golden["none/image"] = torch.from_numpy(np.ascontiguousarray(image)).float()
    for name, image in golden.items():
        diff = (image - golden["none/image"]).abs()
        print(f"{name}: max |diff| from no adapters {float(diff.max()):.3f}, mean {float(diff.mean()):.3f}")
    save_file(golden, os.path.join(FX, "lora_golden.safetensors"))
    with open(os.path.join(FX, "lora_cases.json"), "w") as f:
        json.dump({"cases": cases, "hashes": {n: addnet_hash(n) for n in expected}}, f, indent=2)
        f.write("\n")


def addnet_hash(name):
    """A1111's LoRA hash (modules/hashes.py addnet_hash_safetensors): SHA-256 after the header."""
    import hashlib
    with open(os.path.join(OUT, f"{name}.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(n + 8)
        return hashlib.sha256(f.read()).hexdigest()


def strip(prompt):
    """A1111 removes each <lora:...> tag from the text (the tokenizer ignores leftover spaces)."""
    import re
    return re.sub(r"<lora:[^>]*>", "", prompt)


if __name__ == "__main__":
    main()
