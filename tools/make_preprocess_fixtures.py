"""Control-image preprocessor goldens: OpenCV's cv2.Canny and the A1111 ControlNet extension's
threshold / scribble_xdog / invert formulas on two small images, for tests/tests/preprocess.rs.

Run: python tools/make_preprocess_fixtures.py  (needs numpy, opencv-python, Pillow)
"""

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/preprocess"


def shapes_image():
    """Odd-sized: filled shapes, a colour gradient, thin lines and mild noise."""
    h, w = 75, 97
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], -1)
    img = img.astype(np.float64)
    img[((x - 30) ** 2 + (y - 35) ** 2) < 18**2] = [230, 40, 60]
    img[10:30, 55:90] = [20, 20, 200]
    img[50:52, 5:90] = [250, 250, 250]
    img[:, 70:71] = [0, 0, 0]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def sketch_image():
    """Dark strokes on white, what scribble and invert are for."""
    h, w = 64, 83
    rng = np.random.default_rng(11)
    img = np.full((h, w, 3), 245, np.uint8)
    cv2.circle(img, (30, 30), 20, (10, 10, 10), 3)
    cv2.line(img, (5, 60), (80, 5), (40, 40, 40), 2)
    cv2.rectangle(img, (50, 35), (78, 58), (90, 90, 90), 5)
    noise = rng.integers(-8, 9, img.shape)
    return np.clip(img.astype(np.int32) + noise, 0, 255).astype(np.uint8)


def xdog(img, thr):
    # The extension's formula, uint8 arithmetic included.
    g1 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.5)
    g2 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
    result = np.zeros_like(img, dtype=np.uint8)
    result[2 * (255 - dog) > thr] = 255
    return result[:, :, 0]


def save(name, arr):
    Image.fromarray(arr).save(OUT / name)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for stem, img in [("shapes", shapes_image()), ("sketch", sketch_image())]:
        save(f"{stem}.png", img)
        for low, high in [(100, 200), (30, 90), (150, 151)]:
            save(f"{stem}_canny_{low}_{high}.png", cv2.Canny(img, low, high))
        save(f"{stem}_threshold_127.png", ((np.min(img, axis=2) > 127) * 255).astype(np.uint8))
        save(f"{stem}_xdog_32.png", xdog(img, 32))
        save(f"{stem}_invert.png", 255 - img)


if __name__ == "__main__":
    main()
