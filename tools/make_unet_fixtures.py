"""Builds tiny random-weight diffusers UNet2DConditionModels and records one forward pass of each.

Run with the project venv (torch + diffusers, CPU):
    /work/main/.venv/bin/python tools/make_unet_fixtures.py

Writes, for each variant, tests/fixtures/<variant>/unet/{config.json,
diffusion_pytorch_model.safetensors, golden.safetensors}, and golden_odd.safetensors (one odd latent
size) for two of them. golden.safetensors holds the inputs
(`sample`, `timesteps`, `encoder_hidden_states`) and diffusers' output (`out`), all f32.

The configs keep the SD architecture (block types, head-count naming quirk, conv or linear
projections) at toy sizes: all three fixtures together are about 1.3 MB. Channel counts that are not
powers of two (12) and head dims that are not multiples of 8 (3, 4, 6) are deliberate: they exercise
the kernels' padded paths.
"""

import os

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

# SD 1.x family: conv 1x1 proj_in/proj_out, `attention_head_dim` is the head count (2 heads).
SD1 = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(8, 12),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=2,
    cross_attention_dim=32,
    norm_num_groups=4,
    use_linear_projection=False,
)

# SD 2.x family: Linear projections, per-block head counts, upcast_attention as SD 2.1 sets it, and
# a two-layer transformer in the mid block (transformer_layers_per_block is taken from its last entry).
SD2 = dict(
    SD1,
    use_linear_projection=True,
    attention_head_dim=(2, 4),
    transformer_layers_per_block=(1, 2),
    upcast_attention=True,
)

# SD 1.x inpainting: the UNet sees latents, the mask and the masked-image latents (4 + 1 + 4). This
# one also has SD 1.5's full topology (four levels, three with cross-attention, two resnets per down
# block and three per up block), so the skip-connection bookkeeping is tested at its real depth.
SD1_INPAINT = dict(
    SD1,
    in_channels=9,
    block_out_channels=(8, 8, 16, 16),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)


def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Default init leaves norm weights at 1 and biases at 0; move them so the affine parts are tested."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def build(variant: str, config: dict, seed: int) -> None:
    torch.manual_seed(seed)
    model = UNet2DConditionModel(**config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    perturb(model, gen)

    out_dir = os.path.join(ROOT, variant, "unet")
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)

    sample = torch.randn(2, config["in_channels"], 16, 16, generator=gen)
    # Per-item timesteps (a classifier-free-guidance batch would repeat one; distinct ones test more).
    timesteps = torch.tensor([999.0, 10.0])
    encoder_hidden_states = torch.randn(2, 77, config["cross_attention_dim"], generator=gen)
    with torch.no_grad():
        out = model(sample, timesteps, encoder_hidden_states).sample
    save_file(
        {
            "sample": sample.contiguous(),
            "timesteps": timesteps.contiguous(),
            "encoder_hidden_states": encoder_hidden_states.contiguous(),
            "out": out.contiguous(),
        },
        os.path.join(out_dir, "golden.safetensors"),
    )
    params = sum(p.numel() for p in model.parameters())
    print(f"{variant}: {params} parameters, out std {out.std().item():.4f}, max |out| {out.abs().max().item():.4f}")


def odd_size_golden(variant: str, height: int, width: int, seed: int) -> None:
    """One evaluation at a latent size that the downsamplings do not divide (diffusers then upsamples to
    each skip's size). Uses the weights build() saved, so the other fixtures stay as they are."""
    out_dir = os.path.join(ROOT, variant, "unet")
    model = UNet2DConditionModel.from_pretrained(out_dir).eval()
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, model.config.in_channels, height, width, generator=gen)
    timesteps = torch.tensor([500.0])
    encoder_hidden_states = torch.randn(1, 77, model.config.cross_attention_dim, generator=gen)
    with torch.no_grad():
        out = model(sample, timesteps, encoder_hidden_states).sample
    save_file(
        {
            "sample": sample.contiguous(),
            "timesteps": timesteps.contiguous(),
            "encoder_hidden_states": encoder_hidden_states.contiguous(),
            "out": out.contiguous(),
        },
        os.path.join(out_dir, "golden_odd.safetensors"),
    )
    print(f"{variant} odd {height}x{width}: out std {out.std().item():.4f}")


if __name__ == "__main__":
    build("tiny-sd1", SD1, 0)
    build("tiny-sd2", SD2, 1)
    build("tiny-sd1-inpaint", SD1_INPAINT, 2)
    # 13 -> 7 -> 4 -> 2 down and back up through four levels; 9 -> 5 -> 9 through two.
    odd_size_golden("tiny-sd1-inpaint", 13, 11, 3)
    odd_size_golden("tiny-sd1", 9, 7, 4)
