//! The A1111 ControlNet extension's resize modes: how a control map of one aspect ratio becomes
//! the generation's size (`detectmap_proc` in its `scripts/controlnet.py`). Pixels are resampled
//! with kiln's Lanczos-3 `resize` (the extension picks OpenCV's area, cubic or nearest filter and
//! re-thins binary maps); the geometry — sizes, offsets, fill colour — is the extension's.

use std::fmt;

use crate::image::{resize, ImageError, RgbImage};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResizeMode {
    /// Stretch to the target size.
    JustResize,
    /// Scale until both sides cover the target, then crop the centre (the extension's default).
    #[default]
    CropAndResize,
    /// Scale until both sides fit inside the target, centred on the median border colour.
    ResizeAndFill,
}

/// The extension's names, in its enum's order (the API also takes the index).
const NAMES: [&str; 3] = ["Just Resize", "Crop and Resize", "Resize and Fill"];
/// Older names the extension still accepts.
const ALIASES: [(&str, ResizeMode); 4] = [
    ("Inner Fit (Scale to Fit)", ResizeMode::CropAndResize),
    ("Scale to Fit (Inner Fit)", ResizeMode::CropAndResize),
    ("Outer Fit (Shrink to Fit)", ResizeMode::ResizeAndFill),
    ("Envelope (Outer Fit)", ResizeMode::ResizeAndFill),
];
const MODES: [ResizeMode; 3] = [
    ResizeMode::JustResize,
    ResizeMode::CropAndResize,
    ResizeMode::ResizeAndFill,
];

impl ResizeMode {
    /// The extension's `resize_mode` by name, old alias or index (0, 1, 2).
    pub fn from_a1111(value: &str) -> Option<ResizeMode> {
        if let Some(i) = NAMES.iter().position(|n| *n == value) {
            return Some(MODES[i]);
        }
        if let Some((_, m)) = ALIASES.iter().find(|(n, _)| *n == value) {
            return Some(*m);
        }
        MODES.get(value.parse::<usize>().ok()?).copied()
    }

    pub fn names() -> &'static [&'static str] {
        &NAMES
    }

    pub fn a1111_name(self) -> &'static str {
        NAMES[self as usize]
    }
}

impl fmt::Display for ResizeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.a1111_name())
    }
}

/// `img` at `width` x `height` as `mode` maps it.
pub fn fit(
    img: &RgbImage,
    width: usize,
    height: usize,
    mode: ResizeMode,
) -> Result<RgbImage, ImageError> {
    if mode == ResizeMode::JustResize {
        return resize(img, width, height);
    }
    let k0 = height as f64 / img.height as f64;
    let k1 = width as f64 / img.width as f64;
    // numpy's round (half to even), as the extension's `safeint`.
    let scaled = |k: f64| {
        (
            ((img.width as f64 * k).round_ties_even() as usize).max(1),
            ((img.height as f64 * k).round_ties_even() as usize).max(1),
        )
    };
    if mode == ResizeMode::CropAndResize {
        let (w, h) = scaled(k0.max(k1));
        // Never below the target: the crop must fill it.
        let scaled = resize(img, w.max(width), h.max(height))?;
        let (x0, y0) = ((scaled.width - width) / 2, (scaled.height - height) / 2);
        return crop(&scaled, x0, y0, width, height);
    }
    let fill = border_median(img);
    let (w, h) = scaled(k0.min(k1));
    let scaled = resize(img, w.min(width), h.min(height))?;
    let (x0, y0) = ((width - scaled.width) / 2, (height - scaled.height) / 2);
    let mut data: Vec<u8> = fill
        .iter()
        .copied()
        .cycle()
        .take(width * height * 3)
        .collect();
    for (y, row) in scaled.data.chunks_exact(scaled.width * 3).enumerate() {
        let at = ((y0 + y) * width + x0) * 3;
        data[at..at + row.len()].copy_from_slice(row);
    }
    RgbImage::new(width, height, data)
}

/// The `w` x `h` window of `img` whose top-left pixel is (`x0`, `y0`).
fn crop(img: &RgbImage, x0: usize, y0: usize, w: usize, h: usize) -> Result<RgbImage, ImageError> {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in y0..y0 + h {
        let at = (y * img.width + x0) * 3;
        data.extend_from_slice(&img.data[at..at + w * 3]);
    }
    RgbImage::new(w, h, data)
}

/// Per channel, `np.median` of the first and last rows and columns (corners counted twice, as
/// the extension concatenates them), truncated to u8 by `astype`.
fn border_median(img: &RgbImage) -> [u8; 3] {
    let (w, h) = (img.width, img.height);
    let px = |x: usize, y: usize| &img.data[(y * w + x) * 3..(y * w + x) * 3 + 3];
    let mut border: Vec<&[u8]> = Vec::with_capacity(2 * (w + h));
    border.extend((0..w).map(|x| px(x, 0)));
    border.extend((0..w).map(|x| px(x, h - 1)));
    border.extend((0..h).map(|y| px(0, y)));
    border.extend((0..h).map(|y| px(w - 1, y)));
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let mut v: Vec<u8> = border.iter().map(|p| p[c]).collect();
        v.sort_unstable();
        let n = v.len();
        *o = if n % 2 == 1 {
            v[n / 2]
        } else {
            ((u16::from(v[n / 2 - 1]) + u16::from(v[n / 2])) / 2) as u8
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each pixel names its source: red = x, green = y.
    fn coords(w: usize, h: usize) -> RgbImage {
        let data = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [x as u8, y as u8, 7]))
            .collect();
        RgbImage::new(w, h, data).unwrap()
    }

    fn at(img: &RgbImage, x: usize, y: usize) -> [u8; 3] {
        let i = (y * img.width + x) * 3;
        [img.data[i], img.data[i + 1], img.data[i + 2]]
    }

    #[test]
    fn names_aliases_and_indices_parse() {
        for (i, name) in NAMES.iter().enumerate() {
            let m = ResizeMode::from_a1111(name).unwrap();
            assert_eq!(ResizeMode::from_a1111(&i.to_string()), Some(m));
            assert_eq!(m.to_string(), *name);
        }
        assert_eq!(
            ResizeMode::from_a1111("Envelope (Outer Fit)"),
            Some(ResizeMode::ResizeAndFill)
        );
        assert_eq!(ResizeMode::default(), ResizeMode::CropAndResize);
        assert_eq!(ResizeMode::from_a1111("Crop"), None);
        assert_eq!(ResizeMode::from_a1111("4"), None);
    }

    #[test]
    fn crop_and_resize_keeps_the_centre() {
        // 8x4 into 4x4: the scale is 1 (height), so columns 2..6 survive unresampled.
        let out = fit(&coords(8, 4), 4, 4, ResizeMode::CropAndResize).unwrap();
        assert_eq!((out.width, out.height), (4, 4));
        for y in 0..4 {
            for x in 0..4 {
                assert_eq!(at(&out, x, y), [x as u8 + 2, y as u8, 7], "({x}, {y})");
            }
        }
        // Taller than wide: rows (12 - 4) / 2 = 4 .. 8 survive.
        let out = fit(&coords(4, 12), 4, 4, ResizeMode::CropAndResize).unwrap();
        assert_eq!(at(&out, 1, 0), [1, 4, 7]);
        assert_eq!(at(&out, 3, 3), [3, 7, 7]);
        // Resampled: 6x3 scales by 4/3 to 8x4, then loses one column each side.
        let out = fit(&coords(6, 3), 4, 4, ResizeMode::CropAndResize).unwrap();
        assert_eq!((out.width, out.height), (4, 4));
    }

    #[test]
    fn resize_and_fill_centres_on_the_border_median() {
        // 8x4 into 8x8: the scale is 1 (width), rows 2..6 hold the image, the rest the fill.
        let img = coords(8, 4);
        let out = fit(&img, 8, 8, ResizeMode::ResizeAndFill).unwrap();
        // The fill: per channel, the median of the 24 border values (first and last rows, first
        // and last columns), the mean of the middle two truncated.
        let mut reds: Vec<f64> = Vec::new();
        let mut greens: Vec<f64> = Vec::new();
        for x in 0..8 {
            for y in [0, 3] {
                reds.push(x as f64);
                greens.push(y as f64);
            }
        }
        for y in 0..4 {
            for x in [0, 7] {
                reds.push(x as f64);
                greens.push(y as f64);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            ((v[11] + v[12]) / 2.0) as u8
        };
        let fill = [median(&mut reds), median(&mut greens), 7];
        for y in 0..8 {
            for x in 0..8 {
                let want = if (2..6).contains(&y) {
                    [x as u8, (y - 2) as u8, 7]
                } else {
                    fill
                };
                assert_eq!(at(&out, x, y), want, "({x}, {y})");
            }
        }
        // Odd margins: 5x2 scales by 0.8 to 4x2 in 4x4 -> rows 1..3, and (4 - 4) / 2 = 0 columns.
        let out = fit(&coords(5, 2), 4, 4, ResizeMode::ResizeAndFill).unwrap();
        assert_eq!((out.width, out.height), (4, 4));
        assert_eq!(at(&out, 0, 0), at(&out, 3, 3));
        assert_ne!(at(&out, 0, 1), at(&out, 0, 0));
    }

    #[test]
    fn just_resize_stretches() {
        let out = fit(&coords(8, 4), 4, 4, ResizeMode::JustResize).unwrap();
        assert_eq!((out.width, out.height), (4, 4));
        let same = fit(&coords(8, 4), 8, 4, ResizeMode::JustResize).unwrap();
        assert_eq!(same, coords(8, 4));
    }
}
