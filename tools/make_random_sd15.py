"""Builds a diffusers folder with Stable Diffusion 1.5's exact architecture (UNet and VAE from
benches/configs/, CLIP ViT-L/14's text encoder) and random weights (PyTorch's default init, seed 0),
stored f16 (~2 GB). It stands in for a real SD 1.5 checkpoint in the memory and step-time table of
docs/MEMORY.md: peak memory and time depend on the shapes, not the values. Tokenizer and scheduler
are copied from the bundled model.

    .venv/bin/python tools/make_random_sd15.py OUT_DIR
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "models" / "bundled"
CONFIGS = ROOT / "benches" / "configs"

# transformers' CLIPTextConfig of openai/clip-vit-large-patch14, as in benches/examples/sd15_memory.rs.
CLIP_L = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    projection_dim=768,
)


def config(name: str) -> dict:
    cfg = json.loads((CONFIGS / name).read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def main() -> None:
    out = Path(sys.argv[1])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for part in ["tokenizer", "scheduler", "model_index.json"]:
        src = BUNDLED / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, out / part)
    sched = out / "scheduler" / "scheduler_config.json"
    cfg = json.loads(sched.read_text())
    cfg["prediction_type"] = "epsilon"  # SD 1.5's (the bundled model is v-prediction)
    sched.write_text(json.dumps(cfg, indent=2))
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config("sd15-unet.json"))
    unet.to(torch.float16).save_pretrained(out / "unet")
    del unet
    vae = AutoencoderKL.from_config(config("sd15-vae.json"))
    vae.to(torch.float16).save_pretrained(out / "vae")
    del vae
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    text.to(torch.float16).save_pretrained(out / "text_encoder")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
