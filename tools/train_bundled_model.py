#!/usr/bin/env python3
"""Trains kiln's bundled model: a tiny Stable-Diffusion-1-architecture pipeline that draws coloured
shapes on coloured backgrounds, so `kiln generate -p "a red circle on a blue background"` works on a
fresh clone with no download.

What it trains (all on the CPU, one thread, fixed seeds, so a rerun gives the same weights):
1. A synthetic captioned dataset: 64x64 images of one shape (circle, square, triangle) in one colour
   on a flat background of another colour (red, green, blue, yellow, white, black), with random
   position (+-5 px around the centre), size and slight colour jitter, anti-aliased. Caption:
   "a {colour} {shape} on a {background} background" (3 x 6 x 5 = 90 captions).
2. An AutoencoderKL (2 downsamplings: 64x64x3 <-> 16x16x4 latents), MSE reconstruction + a small KL
   term. Its `scaling_factor` is 1 / std of the latents over the dataset, as SD's was chosen.
3. A UNet2DConditionModel (CrossAttnDownBlock2D x2 + DownBlock2D, mid cross-attention block) and a
   CLIPTextModel (hidden 64, 2 layers, quick_gelu, the real 49,408-token CLIP vocabulary so the real
   CLIP tokenizer, kiln's included, feeds it), trained jointly on SD 1's scaled_linear betas
   (0.00085 .. 0.012, 1000 steps) with v-prediction, as SD 2.x (see PREDICTION for why not epsilon).
   10% of captions are replaced by the empty prompt so classifier-free guidance works. The exported
   weights are an EMA of the trained ones.
4. Export to models/bundled/ in diffusers folder layout, weights as f16 safetensors (kiln and
   diffusers both load them; the text encoder's 49408 x 64 token table is most of the size).
5. `--verify DIR` (separate step): runs diffusers' StableDiffusionPipeline from models/bundled/
   (20 steps, CFG 7, 64x64, several seeds and samplers), measures the mean colour of the centre and
   of the corners, writes sample PNGs to DIR and tests/fixtures/bundled_expectations.json.

Every stage writes its result into the work folder (default target/bundled-train/, ignored by git)
and the VAE and UNet stages checkpoint every 100 steps, so an interrupted run resumes where it stopped
(the random streams resume where they were, so a resumed run gives the same weights).

Run (project venv, about 40 minutes on one core of the development machine):
    /work/main/.venv/bin/python tools/train_bundled_model.py            # train + export
    /work/main/.venv/bin/python tools/train_bundled_model.py --verify /tmp/samples

Results of the committed model (also in models/bundled/README.md, written by the export step), on
the 2-core development machine shared with other jobs (about half as long on an idle core):
- VAE: 700 steps x 8 images, 13.4 min; final reconstruction MSE 0.0115 (images in [-1, 1]),
  KL 6.0 nats per latent element; scaling_factor 0.30966. Encoding the dataset: 3.4 min.
- UNet + text encoder: 1600 steps x 32 latents, 21.6 min; final v-prediction MSE 0.103 (the epsilon
  it implies: MSE 0.050), means of the last 100 steps.
- 12.4 MB on disk (f16). `--verify`: all 5 prompts x 4 samplers x 5 seeds have the named colour in
  the centre and the corners; the closest two prompts' images differ by 74/255 on average.
"""

import argparse
import copy
import gzip
import json
import math
import os
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SEED = 20240613

# ---- dataset ----------------------------------------------------------------------------------

RES = 64
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 215, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ["circle", "square", "triangle"]
N_IMAGES = 12000
SUPERSAMPLE = 4  # coverage is computed on a 4x finer grid, so edges are anti-aliased


def caption(shape, fg, bg):
    return f"a {fg} {shape} on a {bg} background"


def all_combos():
    return [(s, fg, bg) for s in SHAPES for fg in COLOURS for bg in COLOURS if fg != bg]


def shape_mask(shape, cx, cy, size):
    """Coverage in [0, 1] of a RES x RES image; (cx, cy) in pixels, `size` is the radius-like extent."""
    n = RES * SUPERSAMPLE
    c = (np.arange(n) + 0.5) / SUPERSAMPLE
    x, y = np.meshgrid(c, c)
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= size**2
    elif shape == "square":
        h = size * 0.9  # about the circle's area
        inside = (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    else:  # equilateral triangle pointing up, centroid at (cx, cy), circumradius 1.3 * size
        r = size * 1.3
        angles = (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        verts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
        inside = np.ones_like(x, dtype=bool)
        for i in range(3):
            (x0, y0), (x1, y1) = verts[i], verts[(i + 1) % 3]
            # the centroid is on the positive side of every edge
            side = (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)
            ref = (x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0)
            inside &= side * ref >= 0
    return inside.reshape(RES, SUPERSAMPLE, RES, SUPERSAMPLE).mean(axis=(1, 3))


def draw(rng, shape, fg, bg):
    cx, cy = RES / 2 + rng.uniform(-5, 5, size=2)
    size = rng.uniform(14, 20)
    m = shape_mask(shape, cx, cy, size)[..., None]
    fgc = np.clip(np.array(COLOURS[fg]) + rng.uniform(-12, 12, 3), 0, 255)
    bgc = np.clip(np.array(COLOURS[bg]) + rng.uniform(-12, 12, 3), 0, 255)
    img = m * fgc + (1 - m) * bgc
    return np.round(img).astype(np.uint8)


def make_dataset():
    rng = np.random.RandomState(SEED)
    combos = all_combos()
    labels = rng.randint(0, len(combos), size=N_IMAGES)
    images = np.stack([draw(rng, *combos[i]) for i in labels])
    return images, labels, combos


def to_tensor(images):
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


# ---- models -----------------------------------------------------------------------------------

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[16, 32, 64],
    layers_per_block=1,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=8,
    sample_size=RES,
)

UNET_CONFIG = dict(
    sample_size=RES // 4,
    in_channels=4,
    out_channels=4,
    block_out_channels=[32, 64, 64],
    layers_per_block=1,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    attention_head_dim=4,  # diffusers' SD1 naming quirk: this is the number of heads
    cross_attention_dim=64,
    norm_num_groups=16,
    use_linear_projection=False,
)

TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=64,
    intermediate_size=256,
    projection_dim=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)

# v-prediction, as SD 2.x. Two epsilon-prediction runs of this model (1450 steps plain, 400 steps with
# the loss weighted by 1 / alpha_bar) never learned to use the caption: the predicted clean latents at
# t >= 800 were equally wrong with the right, the empty and a wrong caption. With SD 1's betas the
# caption matters only at high noise, where an epsilon model has to output the noisy input itself plus
# a correction of 0.07 x the clean latent, and this UNet's error on the first part hides the second.
# A v-prediction model outputs about minus the clean latent there; it used the caption within 160
# steps (clean-latent MSE at t = 999: 0.33 with the right caption, 1.34 with a wrong one).
PREDICTION = "v_prediction"

SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.42.1",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "prediction_type": PREDICTION,
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
}


def alphas_cumprod():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


# ---- tokenizer --------------------------------------------------------------------------------


def bytes_to_unicode():
    """GPT-2 / CLIP's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tokenizer(dir_):
    """vocab.json + merges.txt of OpenAI's CLIP BPE (from kiln's embedded asset), padding with EOS as
    SD 1.x's tokenizer folder does."""
    os.makedirs(dir_, exist_ok=True)
    text = gzip.open(os.path.join(REPO, "models", "assets", "clip_bpe_merges.txt.gz")).read().decode("utf-8")
    merges = [line for line in text.split("\n")[1:] if line]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split(" ")) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    with open(os.path.join(dir_, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(dir_, "merges.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    specials = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    with open(os.path.join(dir_, "special_tokens_map.json"), "w") as f:
        json.dump(specials, f, indent=2)
    config = dict(specials, tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True,
                  add_prefix_space=False, errors="replace")
    with open(os.path.join(dir_, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def load_tokenizer(dir_):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(dir_)


def token_ids(tok, texts):
    return torch.tensor(tok(texts, padding="max_length", max_length=77, truncation=True)["input_ids"])


# ---- training stages --------------------------------------------------------------------------

VAE_STEPS = 700
VAE_BATCH = 8
VAE_LR = 1e-3
VAE_KL_WEIGHT = 1e-5  # on the per-latent-element KL; the MSE is per pixel channel in [-1, 1]

UNET_STEPS = 1600
UNET_BATCH = 32
UNET_LR = 8e-4
UNET_WARMUP = 100
UNET_EMA = 0.998
CFG_DROPOUT = 0.1
CKPT_EVERY = 100


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def lr_at(step, total, peak, warmup):
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def train_vae(work, images):
    from diffusers import AutoencoderKL

    out = os.path.join(work, "vae.pt")
    if os.path.exists(out):
        return torch.load(out)
    ckpt_path = os.path.join(work, "vae_ckpt.pt")
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKL(**VAE_CONFIG)
    opt = torch.optim.Adam(vae.parameters(), lr=VAE_LR)
    gen = torch.Generator().manual_seed(SEED + 2)
    start, hist, seconds = 0, [], 0.0
    if os.path.exists(ckpt_path):
        # the generator's state is saved too, so a resumed run draws the same batches
        ck = torch.load(ckpt_path)
        vae.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        start, hist, seconds = ck["step"], ck["hist"], ck["seconds"]
        log(f"resuming the VAE stage at step {start}")
    t0 = time.time() - seconds
    for step in range(start, VAE_STEPS):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, VAE_STEPS, VAE_LR, 50)
        idx = torch.randint(0, len(images), (VAE_BATCH,), generator=gen)
        x = to_tensor(images[idx.numpy()])
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        kl = post.kl().mean() / post.mean[0].numel()
        loss = mse + VAE_KL_WEIGHT * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        hist.append((mse.item(), kl.item()))
        if step % 50 == 0 or step == VAE_STEPS - 1:
            m = np.mean(hist[-50:], axis=0)
            log(f"vae step {step}: mse {m[0]:.5f} kl/elem {m[1]:.3f}")
        if (step + 1) % CKPT_EVERY == 0 and step + 1 < VAE_STEPS:
            torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                        "step": step + 1, "hist": hist, "seconds": time.time() - t0}, ckpt_path + ".tmp")
            os.replace(ckpt_path + ".tmp", ckpt_path)
    result = {
        "state": vae.state_dict(),
        "seconds": time.time() - t0,
        "final_mse": float(np.mean([h[0] for h in hist[-50:]])),
        "final_kl": float(np.mean([h[1] for h in hist[-50:]])),
    }
    torch.save(result, out)
    return result


def encode_dataset(work, images, vae_state):
    from diffusers import AutoencoderKL

    out = os.path.join(work, "latents.pt")
    if os.path.exists(out):
        return torch.load(out)
    vae = AutoencoderKL(**VAE_CONFIG)
    vae.load_state_dict(vae_state)
    vae.eval()
    t0, means, stds, mses = time.time(), [], [], []
    with torch.no_grad():
        for i in range(0, len(images), 100):
            x = to_tensor(images[i : i + 100])
            post = vae.encode(x).latent_dist
            means.append(post.mean)
            stds.append(post.std)
            if i % 2000 == 0:  # reconstruction error of the posterior mean, on a subset
                mses.append(F.mse_loss(vae.decode(post.mean).sample, x).item())
    mean, std = torch.cat(means), torch.cat(stds)
    gen = torch.Generator().manual_seed(SEED + 3)
    sample = mean + std * torch.randn(mean.shape, generator=gen)
    scaling = float(f"{1.0 / sample.std().item():.5g}")
    log(f"latents: mean {sample.mean():.3f} std {sample.std():.3f} -> scaling_factor {scaling}; "
        f"posterior std mean {std.mean():.4f}; recon mse {np.mean(mses):.5f}")
    result = {"mean": mean, "std": std, "scaling_factor": scaling, "recon_mse": float(np.mean(mses)),
              "seconds": time.time() - t0}
    torch.save(result, out)
    return result


def build_unet_and_text():
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(SEED + 4)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    torch.manual_seed(SEED + 5)
    text = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    return unet, text


class Joint(torch.nn.Module):
    def __init__(self, unet, text):
        super().__init__()
        self.unet, self.text = unet, text

    def forward(self, noisy, t, ids):
        ctx = self.text(ids).last_hidden_state
        return self.unet(noisy, t, ctx).sample


def train_unet(work, latents, labels, combos, tok):
    out = os.path.join(work, "unet.pt")
    if os.path.exists(out):
        return torch.load(out)
    ckpt_path = os.path.join(work, "unet_ckpt.pt")
    model = Joint(*build_unet_and_text())
    ema = copy.deepcopy(model).requires_grad_(False)
    # no weight decay: rows of the token table for words never seen must stay as initialised
    opt = torch.optim.AdamW(model.parameters(), lr=UNET_LR, weight_decay=0.0)
    start, hist, seconds = 0, [], 0.0
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        start, hist, seconds = ck["step"], ck["hist"], ck["seconds"]
        log(f"resuming the UNet stage at step {start}")

    ids = token_ids(tok, [caption(*c) for c in combos])
    empty = token_ids(tok, [""])[0]
    labels = torch.from_numpy(labels)
    sf = latents["scaling_factor"]
    acp = alphas_cumprod()
    model.train()
    t0 = time.time() - seconds
    for step in range(start, UNET_STEPS):
        gen = torch.Generator().manual_seed(SEED * 1000 + step)  # a resumed run draws the same batches
        for g in opt.param_groups:
            g["lr"] = lr_at(step, UNET_STEPS, UNET_LR, UNET_WARMUP)
        idx = torch.randint(0, len(labels), (UNET_BATCH,), generator=gen)
        m, s = latents["mean"][idx], latents["std"][idx]
        z0 = (m + s * torch.randn(m.shape, generator=gen)) * sf
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, 1000, (UNET_BATCH,), generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z0 + (1 - a).sqrt() * noise
        batch_ids = ids[labels[idx]].clone()
        drop = torch.rand(UNET_BATCH, generator=gen) < CFG_DROPOUT
        batch_ids[drop] = empty
        if PREDICTION == "v_prediction":
            target = a.sqrt() * noise - (1 - a).sqrt() * z0
        else:
            target = noise
        pred = model(noisy, t, batch_ids)
        loss = F.mse_loss(pred, target)
        # the epsilon the prediction implies, for the log
        eps = pred if PREDICTION == "epsilon" else a.sqrt() * pred + (1 - a).sqrt() * noisy
        eps_mse = F.mse_loss(eps.detach(), noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(UNET_EMA, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.lerp_(p, 1 - decay)
        hist.append((loss.item(), eps_mse.item()))
        if step % 25 == 0 or step == UNET_STEPS - 1:
            el = time.time() - t0
            h = np.mean(hist[-100:], axis=0)
            log(f"unet step {step}: loss {h[0]:.4f}, implied eps mse {h[1]:.4f} (avg 100)  {el:.0f}s "
                f"({el / (step + 1):.2f}s/step)")
        if (step + 1) % CKPT_EVERY == 0 and step + 1 < UNET_STEPS:
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "step": step + 1, "hist": hist, "seconds": time.time() - t0}, ckpt_path + ".tmp")
            os.replace(ckpt_path + ".tmp", ckpt_path)
    result = {"ema": ema.state_dict(), "hist": hist, "seconds": time.time() - t0,
              "final_loss": float(np.mean([h[0] for h in hist[-100:]])),
              "final_eps_mse": float(np.mean([h[1] for h in hist[-100:]]))}
    torch.save(result, out)
    return result


# ---- export -----------------------------------------------------------------------------------


def export(dst, vae_res, lat_res, unet_res, tok_dir):
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    vae = AutoencoderKL(**VAE_CONFIG, scaling_factor=lat_res["scaling_factor"])
    vae.load_state_dict(vae_res["state"])
    unet, text = build_unet_and_text()
    joint = Joint(unet, text)
    joint.load_state_dict(unet_res["ema"])

    def save_diffusers(model, sub, weights):
        d = os.path.join(dst, sub)
        model.save_config(d)
        sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
        save_file(sd, os.path.join(d, weights), metadata={"format": "pt"})

    save_diffusers(vae, "vae", "diffusion_pytorch_model.safetensors")
    save_diffusers(unet, "unet", "diffusion_pytorch_model.safetensors")
    d = os.path.join(dst, "text_encoder")
    os.makedirs(d)
    cfg = text.config.to_dict()
    cfg["architectures"] = ["CLIPTextModel"]
    cfg["dtype"] = "float16"
    for k in ("_name_or_path", "transformers_version"):
        cfg.pop(k, None)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    # CLIP's position_ids buffer is not a weight in transformers >= 4.31; keep only parameters
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in text.state_dict().items()
          if not k.endswith("position_ids")}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    shutil.copytree(tok_dir, os.path.join(dst, "tokenizer"))
    os.makedirs(os.path.join(dst, "scheduler"))
    with open(os.path.join(dst, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER_CONFIG, f, indent=2)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(dst, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)


def write_readme(dst, vae_res, lat_res, unet_res, total_seconds):
    sizes = {}
    for root, _, files in os.walk(dst):
        for name in files:
            p = os.path.join(root, name)
            sizes[os.path.relpath(p, dst)] = os.path.getsize(p)
    total = sum(sizes.values())
    n = lambda sd: sum(v.numel() for v in sd.values())  # noqa: E731
    ema = unet_res["ema"]
    unet_params = n({k: v for k, v in ema.items() if k.startswith("unet.")})
    text_params = n({k: v for k, v in ema.items() if k.startswith("text.") and "position_ids" not in k})
    lines = [
        "# models/bundled",
        "",
        "kiln's bundled model: a tiny Stable Diffusion 1.x-architecture pipeline (CLIP text encoder, UNet,",
        "AutoencoderKL, diffusers folder layout, f16 weights) trained from scratch by",
        "`tools/train_bundled_model.py` on synthetic images of one shape (circle, square, triangle) in one",
        "colour on a flat background of another (red, green, blue, yellow, white, black), captioned",
        '"a {colour} {shape} on a {background} background". It draws 64x64 images (UNet sample_size 16 x',
        "VAE scale factor 4). It exists so that kiln works with no download; it knows nothing else.",
        f"The UNet predicts {PREDICTION} on SD 1's scaled_linear betas (scheduler/scheduler_config.json).",
        "",
        "Training (CPU, one thread, fixed seeds):",
        "",
        f"- VAE: {VAE_STEPS} steps x batch {VAE_BATCH}, {vae_res['seconds'] / 60:.1f} min; final MSE "
        f"{vae_res['final_mse']:.5f} (images in [-1, 1]), KL/element {vae_res['final_kl']:.3f}; "
        f"scaling_factor {lat_res['scaling_factor']}.",
        f"- UNet ({unet_params:,} parameters) + text encoder ({text_params:,} parameters) jointly: "
        f"{UNET_STEPS} steps x batch {UNET_BATCH}, {unet_res['seconds'] / 60:.1f} min; final "
        f"{PREDICTION} MSE {unet_res['final_loss']:.4f}, implied epsilon MSE "
        f"{unet_res['final_eps_mse']:.4f} (means of the last 100 steps); EMA weights exported.",
        f"- Total {total_seconds / 60:.1f} min.",
        "",
        f"Files ({total / 1e6:.2f} MB in total):",
        "",
    ]
    lines += [f"- `{k}`: {v:,} bytes" for k, v in sorted(sizes.items())]
    lines += ["", "Licence: the weights are produced by the script in this repository; the tokenizer files",
              "are OpenAI CLIP's BPE vocabulary (MIT License, Copyright (c) 2021 OpenAI).", ""]
    with open(os.path.join(dst, "README.md"), "w") as f:
        f.write("\n".join(lines))
    return total


# ---- verification with diffusers ----------------------------------------------------------------

CENTRE = (24, 40)  # [24, 40) x [24, 40): the middle 16 x 16 pixels
CORNER = 8  # the four 8 x 8 corner patches
VERIFY_PROMPTS = [
    ("a red circle on a blue background", "red", "blue"),
    ("a green square on a yellow background", "green", "yellow"),
    ("a blue triangle on a white background", "blue", "white"),
    ("a yellow circle on a black background", "yellow", "black"),
    ("a white square on a red background", "white", "red"),
]
# What a measured mean colour (0..255) must satisfy to count as the named colour.
RANGES = {
    "red": ([150, 0, 0], [255, 110, 110]),
    "green": ([0, 100, 0], [110, 255, 130]),
    "blue": ([0, 0, 140], [110, 140, 255]),
    "yellow": ([170, 150, 0], [255, 255, 120]),
    "white": ([190, 190, 190], [255, 255, 255]),
    "black": ([0, 0, 0], [70, 70, 70]),
}
SEEDS = [0, 1, 2, 3, 42]
SAMPLERS = ["EulerDiscreteScheduler", "DDIMScheduler", "EulerAncestralDiscreteScheduler",
            "DPMSolverMultistepScheduler"]


def regions(img):
    """Mean RGB (0..255) of the centre box and of the four corner patches together."""
    img = img.astype(np.float64) * 255
    a, b = CENTRE
    centre = img[a:b, a:b].reshape(-1, 3).mean(0)
    c = CORNER
    corners = np.concatenate([img[:c, :c], img[:c, -c:], img[-c:, :c], img[-c:, -c:]]).reshape(-1, 3).mean(0)
    return centre, corners


def in_range(rgb, name):
    lo, hi = RANGES[name]
    return all(lo[i] <= rgb[i] <= hi[i] for i in range(3))


def verify(model_dir, out_dir):
    import diffusers
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    base_config = pipe.scheduler.config
    entries, failures, firsts = [], [], {}
    for prompt, fg, bg in VERIFY_PROMPTS:
        measured = []
        for sampler in SAMPLERS:
            pipe.scheduler = getattr(diffusers, sampler).from_config(base_config)
            for seed in SEEDS:
                img = pipe(prompt, num_inference_steps=20, guidance_scale=7.0, height=RES, width=RES,
                           generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
                centre, corners = regions(img)
                ok = in_range(centre, fg) and in_range(corners, bg)
                measured.append({"sampler": sampler, "seed": seed, "centre": [round(v, 1) for v in centre],
                                 "corners": [round(v, 1) for v in corners], "ok": ok})
                if not ok:
                    failures.append((prompt, sampler, seed, centre.round(), corners.round()))
                if sampler == "EulerDiscreteScheduler":
                    name = prompt.replace(" ", "_") + f"_s{seed}.png"
                    Image.fromarray((img * 255).round().astype(np.uint8)).save(os.path.join(out_dir, name))
                    if seed == 0:
                        firsts[prompt] = img
        log(f"{prompt}: {sum(m['ok'] for m in measured)}/{len(measured)} ok")
        entries.append({
            "prompt": prompt,
            "centre_colour": fg,
            "centre_rgb_min": RANGES[fg][0],
            "centre_rgb_max": RANGES[fg][1],
            "corner_colour": bg,
            "corner_rgb_min": RANGES[bg][0],
            "corner_rgb_max": RANGES[bg][1],
            "diffusers_measurements": measured,
        })
    # different prompts give different pictures (Euler, seed 0)
    imgs = list(firsts.values())
    pairs = [(i, j) for i in range(len(imgs)) for j in range(i + 1, len(imgs))]
    min_diff = min(np.abs(imgs[i] - imgs[j]).mean() for i, j in pairs)
    # a contact sheet of every prompt x the first 4 seeds, scaled 2x, for looking at
    rows = []
    for prompt, _, _ in VERIFY_PROMPTS:
        files = [os.path.join(out_dir, prompt.replace(" ", "_") + f"_s{s}.png") for s in SEEDS[:4]]
        row = [np.asarray(Image.open(f)) for f in files]
        rows.append(np.concatenate(row, axis=1))
    sheet = np.concatenate(rows, axis=0)
    Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(
        os.path.join(out_dir, "contact_sheet.png"))
    doc = {
        "about": "Content checks for the bundled model (models/bundled), verified with diffusers 0.42 "
                 "StableDiffusionPipeline (f32) by tools/train_bundled_model.py --verify. The centre is the "
                 "mean RGB (0..255) of pixels [24, 40) x [24, 40); the corners the mean of the four 8 x 8 "
                 "corner patches together. Every prompt passed with every listed sampler and seed "
                 "(see diffusers_measurements).",
        "width": RES,
        "height": RES,
        "steps": 20,
        "cfg_scale": 7.0,
        "negative_prompt": "",
        "seeds": SEEDS,
        "samplers": SAMPLERS,
        "centre_box": {"x0": CENTRE[0], "x1": CENTRE[1], "y0": CENTRE[0], "y1": CENTRE[1]},
        "corner_size": CORNER,
        "min_mean_abs_difference_between_prompts": round(float(min_diff) * 255, 1),
        "prompts": entries,
    }
    if failures:
        for f in failures:
            log(f"FAIL {f}")
        doc["about"] += f" NOTE: {len(failures)} measurements fell outside the ranges."
    with open(os.path.join(REPO, "tests", "fixtures", "bundled_expectations.json"), "w") as f:
        json.dump(doc, f, indent=1)
    log(f"min mean |difference| between prompts: {min_diff * 255:.1f}/255; failures: {len(failures)}")
    return not failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=os.path.join(REPO, "target", "bundled-train"))
    ap.add_argument("--out", default=os.path.join(REPO, "models", "bundled"))
    ap.add_argument("--verify", metavar="SAMPLES_DIR", help="only verify the exported model with diffusers")
    ap.add_argument("--smoke", action="store_true", help="a few steps of each stage, to test the script")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.smoke:
        global VAE_STEPS, UNET_STEPS, N_IMAGES, CKPT_EVERY
        VAE_STEPS, UNET_STEPS, N_IMAGES, CKPT_EVERY = 3, 5, 200, 2
        global SEEDS, SAMPLERS
        SEEDS, SAMPLERS = SEEDS[:4], SAMPLERS[:2]
    if args.verify:
        raise SystemExit(0 if verify(args.out, args.verify) else 1)

    os.makedirs(args.work, exist_ok=True)
    t0 = time.time()
    tok_dir = os.path.join(args.work, "tokenizer")
    write_tokenizer(tok_dir)
    tok = load_tokenizer(tok_dir)
    images, labels, combos = make_dataset()
    log(f"dataset: {len(images)} images, {len(combos)} captions ({time.time() - t0:.0f}s)")
    vae_res = train_vae(args.work, images)
    lat_res = encode_dataset(args.work, images, vae_res["state"])
    unet_res = train_unet(args.work, lat_res, labels, combos, tok)
    total_seconds = vae_res["seconds"] + lat_res["seconds"] + unet_res["seconds"]
    export(args.out, vae_res, lat_res, unet_res, tok_dir)
    total = write_readme(args.out, vae_res, lat_res, unet_res, total_seconds)
    log(f"exported to {args.out}: {total / 1e6:.2f} MB; training {total_seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
