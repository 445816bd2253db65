//! Image preprocessing for Pixtral / Mistral3 as mistral-common's `ImageEncoder` does it
//! (`tokens/tokenizers/image.py`, checked against mistral-common 1.13.1): scale the image so its
//! longer side is at most `longest_edge` (Python `round`, ties to even), round each side up to whole
//! merged tokens of `patch_size * merge` pixels, resize straight to that size with OpenCV's float
//! bicubic (no clamping), then `/ 255`, minus the CLIP mean, divided by the CLIP std, channels first.

use kiln_runtime::{Error, Result};

use super::{resize_bicubic, DecodedImage, MAX_DECODED_PIXELS};

/// CLIP's per-channel mean (RGB), in units of full scale; mistral-common's `DATASET_MEAN`, rounded
/// to f32 as numpy does it (Python float, then float32).
pub const CLIP_MEAN: [f32; 3] = [
    0.48145466f64 as f32,
    0.4578275f64 as f32,
    0.40821073f64 as f32,
];
/// CLIP's per-channel standard deviation (RGB); mistral-common's `DATASET_STD`.
pub const CLIP_STD: [f32; 3] = [
    0.26862954f64 as f32,
    0.26130258f64 as f32,
    0.27577711f64 as f32,
];

/// How an image larger than `longest_edge` gets its scaled size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SizeRounding {
    /// mistral-common: `max(round(side / ratio), 1)` with Python's `round` (half to even).
    #[default]
    MistralCommon,
    /// transformers' `PixtralImageProcessor` (`get_resize_output_image_size`): `floor(side / ratio)`.
    /// A side that floors to 0 pixels (aspect ratios beyond `longest_edge : 1`) is an error.
    Transformers,
}

/// The preprocessing settings of a Pixtral vision encoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageProcessor {
    /// Pixels per patch side (14 for Mistral Small 3.1, 16 for Pixtral 12B).
    pub patch_size: usize,
    /// Patches merged into one token along each side (2 for Mistral Small 3.1, 1 for Pixtral 12B).
    pub merge: usize,
    /// Largest side, in pixels, before an image is scaled down (mistral-common's `max_image_size`).
    pub longest_edge: usize,
    pub rounding: SizeRounding,
}

impl Default for ImageProcessor {
    /// Mistral Small 3.1 (mistral-common's `ImageConfig(14, 1540, spatial_merge_size=2)`).
    fn default() -> Self {
        Self {
            patch_size: 14,
            merge: 2,
            longest_edge: 1540,
            rounding: SizeRounding::MistralCommon,
        }
    }
}

/// An image ready for the vision encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedImage {
    /// Merged-token grid: `rows` lines of `cols` `[IMG]` tokens.
    pub rows: usize,
    pub cols: usize,
    /// Pixel size: `rows * patch_size * merge` by `cols * patch_size * merge`.
    pub height: usize,
    pub width: usize,
    /// `[3, height, width]`, channels first, normalised with [`CLIP_MEAN`] and [`CLIP_STD`].
    pub pixels: Vec<f32>,
    /// The [`DecodedImage`]'s hash.
    pub hash: u64,
}

const OP: &str = "image preprocess";

impl ImageProcessor {
    /// Pixels per merged token side.
    fn token_pixels(&self) -> Result<usize> {
        if self.patch_size == 0 || self.merge == 0 || self.longest_edge == 0 {
            return Err(Error::shape(
                OP,
                format!(
                    "patch size {}, merge {} and longest edge {} must all be positive",
                    self.patch_size, self.merge, self.longest_edge
                ),
            ));
        }
        self.patch_size.checked_mul(self.merge).ok_or_else(|| {
            Error::limit(
                OP,
                format!(
                    "patch size {} x merge {} overflows",
                    self.patch_size, self.merge
                ),
            )
        })
    }

    /// The (width, height) in pixels an image is scaled to before it is padded up to whole tokens.
    fn scaled_size(&self, width: u32, height: u32) -> Result<(u64, u64)> {
        if width == 0 || height == 0 {
            return Err(Error::shape(
                OP,
                format!("a {width}x{height} image has no pixels"),
            ));
        }
        let (w, h) = (width as f64, height as f64);
        let max = self.longest_edge as f64;
        // mistral-common: ratio = max(h / max_image_size, w / max_image_size).
        let ratio = (h / max).max(w / max);
        if ratio <= 1.0 {
            return Ok((width as u64, height as u64));
        }
        Ok(match self.rounding {
            SizeRounding::MistralCommon => (
                (w / ratio).round_ties_even().max(1.0) as u64,
                (h / ratio).round_ties_even().max(1.0) as u64,
            ),
            SizeRounding::Transformers => {
                let (sw, sh) = ((w / ratio).floor() as u64, (h / ratio).floor() as u64);
                if sw == 0 || sh == 0 {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "a {width}x{height} image scales to {sw}x{sh} pixels under \
                             transformers' rounding (longest edge {})",
                            self.longest_edge
                        ),
                    ));
                }
                (sw, sh)
            }
        })
    }

    /// The merged-token grid `(rows, cols)` of a `width x height` image.
    pub fn grid(&self, width: u32, height: u32) -> Result<(usize, usize)> {
        let unit = self.token_pixels()?;
        let (w, h) = self.scaled_size(width, height)?;
        let tokens = |x: u64| ((x - 1) / unit as u64 + 1) as usize;
        let (rows, cols) = (tokens(h), tokens(w));
        // rows, cols <= max(width, height) < 2^32, unit fits usize: the products fit u128.
        let pixels = (rows as u128 * unit as u128) * (cols as u128 * unit as u128);
        if pixels > MAX_DECODED_PIXELS as u128 {
            return Err(Error::limit(
                OP,
                format!(
                    "a {width}x{height} image would be resized to {} x {} pixels (at most {MAX_DECODED_PIXELS})",
                    cols as u128 * unit as u128,
                    rows as u128 * unit as u128
                ),
            ));
        }
        Ok((rows, cols))
    }

    /// Resizes and normalises `image` as mistral-common's `ImageEncoder` does.
    pub fn process(&self, image: &DecodedImage) -> Result<PreparedImage> {
        let (rows, cols) = self.grid(image.width, image.height)?;
        let unit = self.token_pixels()?;
        // grid() bounded height * width by MAX_DECODED_PIXELS.
        let (height, width) = (rows * unit, cols * unit);
        let hwc = resize_bicubic(
            &image.rgb,
            image.width as usize,
            image.height as usize,
            3,
            width,
            height,
        )?;
        let plane = height * width;
        let mut pixels = vec![0f32; 3 * plane];
        for (c, out) in pixels.chunks_exact_mut(plane).enumerate() {
            let (mean, std) = (CLIP_MEAN[c], CLIP_STD[c]);
            for (o, px) in out.iter_mut().zip(hwc.chunks_exact(3)) {
                // numpy in float32: divide by 255, subtract the mean, divide by the std.
                *o = (px[c] / 255.0 - mean) / std;
            }
        }
        Ok(PreparedImage {
            rows,
            cols,
            height,
            width,
            pixels,
            hash: image.hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mc(longest_edge: usize) -> ImageProcessor {
        ImageProcessor {
            longest_edge,
            ..Default::default()
        }
    }

    fn tf(longest_edge: usize) -> ImageProcessor {
        ImageProcessor {
            longest_edge,
            rounding: SizeRounding::Transformers,
            ..Default::default()
        }
    }

    #[test]
    fn grids_of_common_sizes() {
        let p = ImageProcessor::default();
        // 4000x3000: ratio 2.597..., 1540 x 1155 pixels -> 55 x 42 tokens.
        assert_eq!(p.grid(4000, 3000).unwrap(), (42, 55));
        assert_eq!(p.grid(1540, 1540).unwrap(), (55, 55));
        assert_eq!(p.grid(1541, 1).unwrap(), (1, 55));
        assert_eq!(p.grid(37, 23).unwrap(), (1, 2));
        assert_eq!(p.grid(28, 29).unwrap(), (2, 1));
        assert_eq!(p.grid(1, 1).unwrap(), (1, 1));
    }

    #[test]
    fn ties_round_to_even_like_python() {
        // 112 x 57 at longest edge 56: ratio 2, height 28.5 -> 28 (one token); rounding half up
        // would give 29 pixels and two token rows.
        assert_eq!(mc(56).grid(112, 57).unwrap(), (1, 2));
        // 29.5 -> 30, still two rows either way.
        assert_eq!(mc(56).grid(112, 59).unwrap(), (2, 2));
        assert_eq!(mc(56).scaled_size(112, 57).unwrap(), (56, 28));
        assert_eq!(mc(56).scaled_size(112, 59).unwrap(), (56, 30));
        assert_eq!(mc(56).scaled_size(112, 61).unwrap(), (56, 30));
    }

    #[test]
    fn transformers_floors_where_mistral_common_rounds() {
        // Agree: no scaling, or exact quotients.
        for (w, h) in [(37, 23), (56, 56), (112, 56), (224, 168)] {
            assert_eq!(mc(56).grid(w, h).unwrap(), tf(56).grid(w, h).unwrap());
        }
        // 100 x 51 at 56: height 28.56 -> 29 (two rows) vs 28 (one row).
        assert_eq!(mc(56).grid(100, 51).unwrap(), (2, 2));
        assert_eq!(tf(56).grid(100, 51).unwrap(), (1, 2));
        // Extreme aspect: mistral-common keeps one pixel, transformers gets zero.
        assert_eq!(mc(56).grid(10_000, 3).unwrap(), (1, 2));
        assert!(tf(56).grid(10_000, 3).is_err());
    }

    #[test]
    fn bad_settings_and_sizes_are_errors() {
        let p = ImageProcessor::default();
        assert!(p.grid(0, 10).is_err());
        assert!(p.grid(10, 0).is_err());
        for bad in [
            ImageProcessor {
                patch_size: 0,
                ..Default::default()
            },
            ImageProcessor {
                merge: 0,
                ..Default::default()
            },
            ImageProcessor {
                longest_edge: 0,
                ..Default::default()
            },
            ImageProcessor {
                patch_size: usize::MAX,
                ..Default::default()
            },
        ] {
            assert!(bad.grid(10, 10).is_err(), "{bad:?}");
        }
        // A huge longest edge lets a huge image through unscaled: the pixel limit stops it.
        let big = mc(usize::MAX);
        assert!(big.grid(u32::MAX, u32::MAX).is_err());
        assert!(big.grid(100_000, 100_000).is_err());
        let image = DecodedImage {
            width: 4,
            height: 4,
            rgb: vec![0; 5],
            hash: 0,
        };
        assert!(p.process(&image).is_err());
    }

    #[test]
    fn white_and_black_normalise_to_clip_values() {
        let image = DecodedImage {
            width: 8,
            height: 8,
            rgb: [[255u8; 96], [0u8; 96]].concat(),
            hash: 7,
        };
        let out = ImageProcessor::default().process(&image).unwrap();
        assert_eq!(
            (out.rows, out.cols, out.height, out.width, out.hash),
            (1, 1, 28, 28, 7)
        );
        assert_eq!(out.pixels.len(), 3 * 28 * 28);
        // Top rows white, bottom rows black: the corner taps stay within one half.
        for c in 0..3 {
            let plane = &out.pixels[c * 784..(c + 1) * 784];
            let white = (1.0 - CLIP_MEAN[c]) / CLIP_STD[c];
            let black = -CLIP_MEAN[c] / CLIP_STD[c];
            assert!((plane[0] - white).abs() < 1e-5, "{} {white}", plane[0]);
            assert!((plane[783] - black).abs() < 1e-5, "{} {black}", plane[783]);
        }
    }
}
