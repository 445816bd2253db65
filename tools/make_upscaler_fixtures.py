#!/usr/bin/env python3
"""Builds the tiny upscaler fixtures for kiln's golden tests (tests/tests/upscale.rs).

basicsr / realesrgan are not installed, so the two architectures are written out below exactly as
xinntao/BasicSR basicsr/archs/rrdbnet_arch.py (RRDBNet, RRDB, ResidualDenseBlock) and
xinntao/Real-ESRGAN realesrgan/archs/srvgg_arch.py (SRVGGNetCompact, PReLU activation) define them.

Random weights (normal, std 1/sqrt(fan_in), so activations stay around 1 through the residual
stacks; biases std 0.05; PReLU slopes uniform in [0.05, 0.4]), saved as f32 .safetensors:

  rrdb_x4.safetensors       RRDBNet(3, 3, scale=4, num_feat=8, num_block=2, num_grow_ch=4), BasicSR names
  rrdb_x4_old.safetensors   the same weights in the old ESRGAN layout (model.0, model.1.sub.N.RDBk.convj.0,
                            model.1.sub.2, model.3, model.6, model.8, model.10)
  rrdb_x2.safetensors       RRDBNet scale=2 (pixel_unshuffle 2 first: conv_first takes 12 channels),
                            names under `params_ema.` as Real-ESRGAN's .pth files hold them
  rrdb_x1.safetensors       RRDBNet scale=1 (pixel_unshuffle 4: conv_first takes 48 channels)
  srvgg_x4.safetensors      SRVGGNetCompact(3, 3, num_feat=8, num_conv=3, upscale=4)

golden.safetensors: `image` F32 [1, 3, 10, 13] uniform in [0, 1] and each model's output for it
(`rrdb_x4`, `rrdb_x2`, `rrdb_x1`, `srvgg_x4`), computed in float64 from the f32 weights. As Real-ESRGAN's
inference does, the x2 / x1 models see the image reflect-padded at the bottom and right to a
multiple of their unshuffle factor, and the output is cropped back to 10*s x 13*s.

Usage: /tmp/venv-vis/bin/python tools/make_upscaler_fixtures.py  (from anywhere)
"""
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "upscalers")


# --- BasicSR basicsr/archs/rrdbnet_arch.py (and arch_util.pixel_unshuffle) ---

def pixel_unshuffle(x, scale):
    b, c, hh, hw = x.size()
    out_channel = c * (scale**2)
    assert hh % scale == 0 and hw % scale == 0
    h = hh // scale
    w = hw // scale
    x_view = x.view(b, c, h, scale, w, scale)
    return x_view.permute(0, 1, 3, 5, 2, 4).reshape(b, out_channel, h, w)


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat=64, num_grow_ch=32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        # Empirically, we use 0.2 to scale the residual for better performance
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat, num_grow_ch=32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x):
        out = self.rdb1(x)
        out = self.rdb2(out)
        out = self.rdb3(out)
        # Empirically, we use 0.2 to scale the residual for better performance
        return out * 0.2 + x


class RRDBNet(nn.Module):
    def __init__(self, num_in_ch, num_out_ch, scale=4, num_feat=64, num_block=23, num_grow_ch=32):
        super().__init__()
        self.scale = scale
        if scale == 2:
            num_in_ch = num_in_ch * 4
        elif scale == 1:
            num_in_ch = num_in_ch * 16
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        # upsample
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        if self.scale == 2:
            feat = pixel_unshuffle(x, scale=2)
        elif self.scale == 1:
            feat = pixel_unshuffle(x, scale=4)
        else:
            feat = x
        feat = self.conv_first(feat)
        body_feat = self.conv_body(self.body(feat))
        feat = feat + body_feat
        # upsample
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        return out


# --- Real-ESRGAN realesrgan/archs/srvgg_arch.py (act_type='prelu', the published models' choice) ---

class SRVGGNetCompact(nn.Module):
    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4):
        super().__init__()
        self.upscale = upscale
        self.body = nn.ModuleList()
        self.body.append(nn.Conv2d(num_in_ch, num_feat, 3, 1, 1))
        self.body.append(nn.PReLU(num_parameters=num_feat))
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(nn.PReLU(num_parameters=num_feat))
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x):
        out = x
        for i in range(0, len(self.body)):
            out = self.body[i](out)
        out = self.upsampler(out)
        # add the nearest upsampled image, so that the network learns the residual
        base = F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        out += base
        return out


def randomise(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if isinstance(dict(model.named_modules())[name.rsplit(".", 1)[0]], nn.PReLU):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.35 + 0.05)
            elif p.dim() == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def old_esrgan_names(sd, num_block):
    """BasicSR names -> the original ESRGAN repo's (RRDB_ESRGAN_x4.pth) for an x4 model."""
    out = {}
    for k, v in sd.items():
        if k.startswith("conv_first."):
            n = "model.0." + k.split(".", 1)[1]
        elif k.startswith("body."):
            _, i, rdb, conv, wb = k.split(".")
            n = f"model.1.sub.{i}.RDB{rdb[3:]}.{conv}.0.{wb}"
        elif k.startswith("conv_body."):
            n = f"model.1.sub.{num_block}." + k.split(".", 1)[1]
        else:
            idx = {"conv_up1": 3, "conv_up2": 6, "conv_hr": 8, "conv_last": 10}[k.split(".")[0]]
            n = f"model.{idx}." + k.split(".", 1)[1]
        out[n] = v
    return out


def run(model, image, factor):
    """Real-ESRGAN's pre-pad: reflect to a multiple of the unshuffle factor, crop the output back."""
    _, _, h, w = image.shape
    ph, pw = (factor - h % factor) % factor, (factor - w % factor) % factor
    x = F.pad(image, (0, pw, 0, ph), mode="reflect") if ph or pw else image
    s = model.scale if isinstance(model, RRDBNet) else model.upscale
    with torch.no_grad():
        y = model.double()(x.double())
    return y[:, :, : h * s, : w * s].float().contiguous()


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(20261207)
    image = torch.rand(1, 3, 10, 13, generator=gen)
    golden = {"image": image}

    def save(model, name, factor, rename=lambda sd: sd):
        randomise(model, gen)
        sd = {k: v.float().contiguous() for k, v in model.state_dict().items()}
        save_file(rename(sd), os.path.join(OUT, f"{name}.safetensors"))
        golden[name] = run(model, image, factor)
        return sd

    x4 = RRDBNet(3, 3, scale=4, num_feat=8, num_block=2, num_grow_ch=4)
    sd = save(x4, "rrdb_x4", 1)
    save_file(old_esrgan_names(sd, 2), os.path.join(OUT, "rrdb_x4_old.safetensors"))
    save(
        RRDBNet(3, 3, scale=2, num_feat=8, num_block=2, num_grow_ch=4),
        "rrdb_x2",
        2,
        lambda sd: {"params_ema." + k: v for k, v in sd.items()},
    )
    save(RRDBNet(3, 3, scale=1, num_feat=8, num_block=1, num_grow_ch=4), "rrdb_x1", 4)
    save(SRVGGNetCompact(3, 3, num_feat=8, num_conv=3, upscale=4), "srvgg_x4", 1)

    save_file(golden, os.path.join(OUT, "golden.safetensors"))
    for k, v in golden.items():
        print(k, tuple(v.shape), f"std {v.std():.3f} min {v.min():.3f} max {v.max():.3f}")


if __name__ == "__main__":
    main()
