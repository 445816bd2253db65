#!/usr/bin/env python3
"""Image preprocessing goldens for kiln-llm's vision module (tests/fixtures/llm/vision/).

Usage (mistral-common 1.13.1, numpy, Pillow, opencv-python-headless, safetensors):
    /tmp/venv-mc/bin/python tools/make_vision_preprocess_fixtures.py
With transformers importable (e.g. /tmp/venv-vis/bin/python) the script also checks its
reproduction of transformers' size rule against `get_resize_output_image_size` itself; the files it
writes are the same either way.

What it writes:
- Small inputs: PNG (RGB, RGBA with partial transparency, palette with a transparent index,
  grayscale, a 3x2 image), a JPEG, a lossy and a lossless WebP. Deterministic (seeded numpy).
- preprocess_golden.safetensors: per case `<name>.pixels` (f32 [3, H, W], mistral-common's
  ImageEncoder output), `<name>.tokens` (i64, its token ids with [IMG]=10, [IMG_BREAK]=12,
  [IMG_END]=13) and, for file inputs, `<name>.rgb` (u8 [h, w, 3]: PIL's decode after
  mistral-common's `_convert_to_rgb`, i.e. transparency composited onto white).
  Two cases are not files but an integer pattern kiln regenerates (`synthetic_pattern` below):
  a 2000x1500 image at max_image_size 56 (full output), and a 3000x2000 image at the real 1540
  (only output rows listed in `rows_kept`, to keep the fixture small).
- preprocess_golden.json: the cases (file, ImageConfig, grid, output size) and `grids`, a table of
  (width, height, max_image_size) -> (rows, cols) with patch 14 x merge 2 under mistral-common's
  rule (`ImageEncoder._image_to_num_tokens`: Python round, ties to even) and transformers' rule
  (PixtralImageProcessor's `get_resize_output_image_size`: floor; 0 rows/cols where a side floors to
  0 pixels), including .5 ties and the cases where the two differ.

mistral-common's ImageEncoder is built directly: ImageEncoder(ImageConfig(image_patch_size=14,
max_image_size=M, spatial_merge_size=2), SpecialImageIDs(img=10, img_break=12, img_end=13)), and
each file goes in as a base64 data URL (ImageURLChunk), the path a chat request takes. Small max
image sizes (56, 84) keep the downscaled cases small.

cv2.resize on x86-64 opencv-python wheels runs Intel IPP for sources of at least 4x4 pixels; the
json records, per case, how far OpenCV's own (non-IPP) code lands from the golden
(`no_ipp_max_abs_diff`, normalised units), computed in a subprocess with OPENCV_IPP=disabled.
"""

import base64
import io
import json
import math
import os
import subprocess
import sys
import tempfile

import cv2
import mistral_common
import numpy as np
from mistral_common.protocol.instruct.chunk import ImageChunk, ImageURLChunk
from mistral_common.tokens.tokenizers.image import (
    ImageConfig,
    ImageEncoder,
    SpecialImageIDs,
    _convert_to_rgb,
    transform_image,
)
from PIL import Image
from safetensors.numpy import save_file

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(REPO, "tests/fixtures/llm/vision")
PATCH, MERGE = 14, 2
IDS = SpecialImageIDs(img=10, img_break=12, img_end=13)


def encoder(max_size):
    return ImageEncoder(
        ImageConfig(image_patch_size=PATCH, max_image_size=max_size, spatial_merge_size=MERGE), IDS
    )


def synthetic_pattern(w, h):
    """v(x, y, c) = (7x + 13y + 85c + (x*y >> 5) + ((x ^ y) & 63)) mod 256, uint8 [h, w, 3]."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    c = np.arange(3, dtype=np.int64)[None, None, :]
    v = 7 * x[..., None] + 13 * y[..., None] + 85 * c + ((x * y) >> 5)[..., None] + ((x ^ y) & 63)[..., None]
    return (v % 256).astype(np.uint8)


def noisy(rng, w, h):
    """Smooth gradients, hard-edged blocks (bicubic overshoot) and noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 128 + 100 * np.sin(x / 3 + y / 5)], -1)
    blocks = ((x // 5 + y // 4) % 2 == 0)[..., None]
    img = np.where(blocks, img, 255 - img) + rng.normal(0, 12, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_inputs(rng):
    """name -> (file name, bytes)."""
    files = {}

    def save(name, fname, pil, **kw):
        buf = io.BytesIO()
        pil.save(buf, **kw)
        files[name] = (fname, buf.getvalue())

    save("small_37x23", "small_37x23.png", Image.fromarray(noisy(rng, 37, 23)), format="PNG")
    save("odd_70x130", "odd_70x130.png", Image.fromarray(noisy(rng, 70, 130)), format="PNG")
    rgb = noisy(rng, 40, 30)
    alpha = np.tile(np.linspace(0, 255, 40).round().astype(np.uint8), (30, 1))
    alpha[:5] = 0
    alpha[-5:] = 255
    save("rgba_40x30", "rgba_40x30.png", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), format="PNG")
    pal = Image.fromarray(noisy(rng, 24, 20)).quantize(colors=16)
    save("palette_24x20", "palette_24x20.png", pal, format="PNG", transparency=3)
    save("gray_33x47", "gray_33x47.png", Image.fromarray(noisy(rng, 33, 47)[..., 0], "L"), format="PNG")
    save("tiny_3x2", "tiny_3x2.png", Image.fromarray(noisy(rng, 3, 2)), format="PNG")
    save("large_160x120", "large_160x120.png", Image.fromarray(noisy(rng, 160, 120)), format="PNG")
    save("photo_64x48", "photo_64x48.jpg", Image.fromarray(noisy(rng, 64, 48)), format="JPEG", quality=90)
    save("lossy_50x33", "lossy_50x33.webp", Image.fromarray(noisy(rng, 50, 33)), format="WEBP", quality=80)
    rgba = np.dstack([noisy(rng, 30, 30), np.tile(np.linspace(0, 255, 30).round().astype(np.uint8), (30, 1))])
    save("lossless_30x30", "lossless_30x30.webp", Image.fromarray(rgba, "RGBA"), format="WEBP", lossless=True)
    return files


# name -> max_image_size; files first, then the synthetic pattern cases.
FILE_CASES = {
    "small_37x23": 1540,  # upscaled 37x23 -> 56x28: the overshoot trap
    "odd_70x130": 84,  # downscaled to 45x84 -> 56x84
    "rgba_40x30": 1540,
    "palette_24x20": 1540,
    "gray_33x47": 1540,
    "tiny_3x2": 1540,  # under 4 pixels a side: OpenCV's own resize, not IPP
    "large_160x120": 56,  # 56x42 -> 56x56
    "photo_64x48": 56,
    "lossy_50x33": 1540,
    "lossless_30x30": 1540,
}
SYNTHETIC_CASES = {"synthetic_2000x1500": (2000, 1500, 56), "synthetic_3000x2000": (3000, 2000, 1540)}


def no_ipp_outputs(jobs):
    """jobs: name -> (rgb uint8, (w, h)); cv2 with IPP disabled, in a subprocess."""
    with tempfile.TemporaryDirectory() as d:
        for name, (rgb, size) in jobs.items():
            np.save(os.path.join(d, name + ".npy"), rgb)
            with open(os.path.join(d, name + ".size"), "w") as f:
                json.dump(size, f)
        env = dict(os.environ, OPENCV_IPP="disabled")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--no-ipp", d], env=env, check=True,
                       stderr=subprocess.DEVNULL)
        return {name: np.load(os.path.join(d, name + ".out.npy")) for name in jobs}


def run_no_ipp(d):
    for f in sorted(os.listdir(d)):
        if f.endswith(".npy") and not f.endswith(".out.npy"):
            name = f[:-4]
            rgb = np.load(os.path.join(d, f))
            with open(os.path.join(d, name + ".size")) as s:
                size = tuple(json.load(s))
            np.save(os.path.join(d, name + ".out.npy"), transform_image(Image.fromarray(rgb), size))


def transformers_grid(w, h, m):
    """transformers' rule as in PixtralImageProcessor's get_resize_output_image_size (5.x source)
    with patch_size = patch * merge as PixtralProcessor passes it: floor, then ceil to whole
    tokens. Returns tokens (rows, cols); 0 where a side floors to 0 pixels."""
    unit = PATCH * MERGE
    ratio = max(h / m, w / m)
    if ratio > 1:
        h = int(math.floor(h / ratio))
        w = int(math.floor(w / ratio))
    return (h - 1) // unit + 1, (w - 1) // unit + 1


def transformers_check():
    try:
        from transformers.image_utils import ChannelDimension
    except Exception as e:  # noqa: BLE001
        print(f"transformers not importable ({e}); using the reproduced size rule only")
        return None
    try:
        from transformers.models.pixtral.image_processing_pixtral import get_resize_output_image_size
    except Exception:  # noqa: BLE001 (the torchvision backend needs torchvision; the PIL one has a copy)
        from transformers.models.pixtral.image_processing_pil_pixtral import get_resize_output_image_size

    def check(w, h, m):
        img = np.broadcast_to(np.zeros(1, np.uint8), (h, w, 3))
        unit = PATCH * MERGE
        oh, ow = get_resize_output_image_size(img, (m, m), (unit, unit), ChannelDimension.LAST)
        return oh // unit, ow // unit

    return check


class Sized:
    def __init__(self, w, h):
        self.size = (w, h)


def grid_table(rng):
    entries = set()
    # .5 ties: ratio exactly 2 or 4, odd short side.
    for m in (56, 84, 112, 1540):
        for h in (57, 59, 113, 115, 2 * m - 1, m + 1, 3 * m + 1):
            entries.add((2 * m, h, m))
            entries.add((h, 2 * m, m))
        for h in (2 * m + 2, 2 * m + 6, 2 * m + 114):
            entries.add((4 * m, h, m))
    # Round and floor differ: fractional part above .5 just past a whole token.
    entries.update([(100, 51, 56), (51, 100, 56), (3000, 1611, 1540), (1611, 3000, 1540)])
    # Common photo and screen sizes, exact limits, extreme aspects (transformers floors to 0).
    for w, h in [(4000, 3000), (3000, 4000), (1920, 1080), (1080, 1920), (1024, 768), (1540, 1540),
                 (1541, 1541), (1541, 1), (1, 1541), (28, 28), (29, 29), (1, 1), (37, 23), (70, 130),
                 (10000, 3), (3, 10000), (7000, 1), (1, 5000), (6000, 4000), (4032, 3024), (800, 600)]:
        for m in (56, 1540):
            entries.add((w, h, m))
    # Where w / (w / m) lands just under m, floor gives m - 1.
    found = 0
    for w in range(1541, 20000):
        if math.floor(w / (w / 1540)) != 1540 and found < 4:
            entries.add((w, 500, 1540))
            found += 1
    for w in range(57, 5000):
        if math.floor(w / (w / 57)) != 57 and found < 8:
            entries.add((w, 30, 57))
            found += 1
    # Random sizes.
    for _ in range(300):
        m = int(rng.choice([56, 84, 112, 1024, 1540]))
        w, h = (int(v) for v in np.exp(rng.uniform(0, math.log(6000), 2)).round())
        entries.add((max(w, 1), max(h, 1), m))

    check = transformers_check()
    table = []
    for w, h, m in sorted(entries):
        cols, rows = encoder(m)._image_to_num_tokens(Sized(w, h))
        trows, tcols = transformers_grid(w, h, m)
        if check is not None and trows > 0 and tcols > 0:
            assert check(w, h, m) == (trows, tcols), (w, h, m, check(w, h, m), (trows, tcols))
        table.append({"width": w, "height": h, "max_image_size": m, "rows": rows, "cols": cols,
                      "transformers_rows": trows, "transformers_cols": tcols})
    return table, check is not None


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--no-ipp":
        run_no_ipp(sys.argv[2])
        return
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20250317)
    files = make_inputs(rng)
    tensors, cases, jobs, goldens = {}, [], {}, {}

    for name, m in FILE_CASES.items():
        fname, data = files[name]
        with open(os.path.join(OUT, fname), "wb") as f:
            f.write(data)
        mime = {"png": "png", "jpg": "jpeg", "webp": "webp"}[fname.rsplit(".", 1)[1]]
        url = f"data:image/{mime};base64," + base64.b64encode(data).decode()
        enc = encoder(m)(ImageURLChunk(image_url=url))
        pil = Image.open(io.BytesIO(data))
        mode = pil.mode
        rgb = np.array(_convert_to_rgb(pil))
        tensors[name + ".rgb"] = np.ascontiguousarray(rgb)
        goldens[name] = (enc, None)
        jobs[name] = (rgb, (enc.image.shape[2], enc.image.shape[1]))
        cases.append({"name": name, "file": fname, "pil_mode": mode, "source_width": rgb.shape[1],
                      "source_height": rgb.shape[0], "max_image_size": m})

    for name, (w, h, m) in SYNTHETIC_CASES.items():
        rgb = synthetic_pattern(w, h)
        enc = encoder(m)(ImageChunk(image=Image.fromarray(rgb)))
        rows_kept = None
        if m == 1540:
            hh = enc.image.shape[1]
            rows_kept = [0, 1, hh // 2, hh - 1]
        goldens[name] = (enc, rows_kept)
        jobs[name] = (rgb, (enc.image.shape[2], enc.image.shape[1]))
        cases.append({"name": name, "file": None, "synthetic": True, "source_width": w, "source_height": h,
                      "max_image_size": m})

    no_ipp = no_ipp_outputs(jobs)
    for case in cases:
        name = case["name"]
        enc, rows_kept = goldens[name]
        _, hh, ww = enc.image.shape
        unit = PATCH * MERGE
        pixels = enc.image.astype(np.float32)
        diff = float(np.abs(no_ipp[name] - pixels).max())
        if rows_kept is not None:
            pixels = pixels[:, rows_kept, :]
            case["rows_kept"] = rows_kept
        tensors[name + ".pixels"] = np.ascontiguousarray(pixels)
        tensors[name + ".tokens"] = np.array(enc.tokens, dtype=np.int64)
        case.update({"patch_size": PATCH, "merge": MERGE, "rows": hh // unit, "cols": ww // unit,
                     "height": hh, "width": ww, "min": float(enc.image.min()), "max": float(enc.image.max()),
                     "no_ipp_max_abs_diff": diff})
        print(f"{name}: {case['source_width']}x{case['source_height']} at {case['max_image_size']} -> "
              f"{ww}x{hh} ({case['rows']}x{case['cols']} tokens), range {case['min']:.3f}..{case['max']:.3f}, "
              f"OpenCV without IPP differs by {diff:.2e}")

    table, checked = grid_table(rng)
    differ = sum(1 for t in table if (t["rows"], t["cols"]) != (t["transformers_rows"], t["transformers_cols"]))
    print(f"grid table: {len(table)} entries, {differ} where transformers' floor differs; "
          f"{'checked against' if checked else 'NOT checked against'} transformers' own function")
    meta = {
        "mistral_common": mistral_common.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "pillow": Image.__version__,
        "special_ids": {"img": IDS.img, "img_break": IDS.img_break, "img_end": IDS.img_end},
        "cases": cases,
        "grids": table,
    }
    save_file(tensors, os.path.join(OUT, "preprocess_golden.safetensors"))
    with open(os.path.join(OUT, "preprocess_golden.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"{OUT}: {total} bytes")
    assert total < 1 << 20


if __name__ == "__main__":
    main()
