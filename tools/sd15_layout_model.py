"""Builds a model folder for `kiln bench sd -m` whose UNet has Stable Diffusion 1.5's block layout
(4 levels, 2 resnets per level, cross-attention in the first three, 8 heads, 32 norm groups) at narrow
widths, with random weights. Host overhead per step scales with the number of dispatches, which the
layout fixes and the widths do not, so this shows an SD 1.5-sized command stream at a device cost
llvmpipe can run. Text encoder, tokenizer, VAE and scheduler are copied from the bundled model.

    .venv/bin/python tools/sd15_layout_model.py OUT_DIR
"""

import shutil
import sys
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

BUNDLED = Path(__file__).resolve().parent.parent / "models" / "bundled"


def main() -> None:
    out = Path(sys.argv[1])
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(BUNDLED, out)
    shutil.rmtree(out / "unet")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(64, 128, 256, 256),
        layers_per_block=2,
        attention_head_dim=8,
        norm_num_groups=32,
        cross_attention_dim=64,  # the bundled text encoder's width
    )
    unet.save_pretrained(out / "unet", safe_serialization=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
