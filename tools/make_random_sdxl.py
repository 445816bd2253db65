"""Builds a diffusers folder with SDXL base 1.0's exact architecture (UNet from
benches/configs/sdxl-unet.json, the SDXL VAE, CLIP ViT-L and OpenCLIP ViT-bigG text encoders) and
random weights (seed 0), stored f16 (~7 GB). It stands in for a real SDXL checkpoint when measuring
peak memory and step time: those depend on the shapes, not the values. The tokenizers are the
bundled model's CLIP vocabulary (bigG's with SDXL's "!" padding); the scheduler is SDXL's.

    .venv/bin/python tools/make_random_sdxl.py OUT_DIR
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "models" / "bundled"
CONFIGS = ROOT / "benches" / "configs"
TINY = ROOT / "tests" / "fixtures" / "tiny-sdxl"

CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
              layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, projection_dim=768)
# laion/CLIP-ViT-bigG-14's text tower as stabilityai/stable-diffusion-xl-base-1.0 ships it.
BIG_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
             num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
             layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, projection_dim=1280)


def main() -> None:
    out = Path(sys.argv[1])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(TINY / "model_index.json", out / "model_index.json")
    shutil.copytree(TINY / "scheduler", out / "scheduler")
    for name, pad in [("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")]:
        shutil.copytree(BUNDLED / "tokenizer", out / name)
        cfg_path = out / name / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["pad_token"] = pad
        cfg_path.write_text(json.dumps(cfg, indent=2))
    torch.manual_seed(0)
    # Built in f16 directly: the f32 UNet alone would take 10 GB of RAM.
    torch.set_default_dtype(torch.float16)
    cfg = json.loads((CONFIGS / "sdxl-unet.json").read_text())
    unet = UNet2DConditionModel.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    unet.save_pretrained(out / "unet")
    del unet
    vae_cfg = json.loads((CONFIGS / "sd15-vae.json").read_text())
    vae_cfg = {k: v for k, v in vae_cfg.items() if not k.startswith("_")}
    vae_cfg.update(scaling_factor=0.13025, force_upcast=True, sample_size=1024)
    AutoencoderKL.from_config(vae_cfg).save_pretrained(out / "vae")
    CLIPTextModel(CLIPTextConfig(**CLIP_L)).save_pretrained(out / "text_encoder")
    CLIPTextModelWithProjection(CLIPTextConfig(**BIG_G)).save_pretrained(out / "text_encoder_2")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
