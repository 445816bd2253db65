//! A1111's Extras upscale (`scripts/postprocessing_upscale.py`, behind POST
//! /sdapi/v1/extra-single-image): upscaler 1 by a factor or to a size (optionally cropped to it,
//! centred on a black canvas), upscaler 2 blended over it by its visibility, and the infotext
//! fields A1111 records.

use kiln_runtime::Result;

use super::{TileOptions, Upscaler};
use crate::image::RgbImage;

/// `resize_mode` 0 (`upscaling_resize`) or 1 (`upscaling_resize_w` / `_h`, `upscaling_crop`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExtrasResize {
    By(f64),
    To {
        width: usize,
        height: usize,
        crop: bool,
    },
}

/// The upscaled image and A1111's `Postprocess ...` fields, in its order.
pub struct ExtrasOutput {
    pub image: RgbImage,
    pub info: Vec<(String, String)>,
}

impl ExtrasOutput {
    /// A1111's infotext of the fields: `k: v, k: v`.
    pub fn infotext(&self) -> String {
        let parts: Vec<String> = self.info.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        parts.join(", ")
    }
}

/// A float as Python's `str` prints it (`2.0`, `1.5`), which is how A1111 records the factor.
pub fn python_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn upscale_one(
    img: &RgbImage,
    up: &Upscaler,
    resize: ExtrasResize,
    tiles: TileOptions,
    info: &mut Vec<(String, String)>,
) -> Result<RgbImage> {
    let mut set = |k: &str, v: String| match info.iter_mut().find(|(key, _)| key == k) {
        Some(entry) => entry.1 = v,
        None => info.push((k.to_string(), v)),
    };
    let scale = match resize {
        ExtrasResize::By(s) => {
            set("Postprocess upscale by", python_float(s));
            s
        }
        ExtrasResize::To { width, height, .. } => {
            set("Postprocess upscale to", format!("{width}x{height}"));
            (width as f64 / img.width as f64).max(height as f64 / img.height as f64)
        }
    };
    let out = up.upscale_by(img, scale, tiles)?;
    match resize {
        ExtrasResize::To {
            width,
            height,
            crop: true,
        } => {
            let out = paste_centred(&out, width, height);
            set("Postprocess crop to", format!("{width}x{height}"));
            Ok(out)
        }
        _ => Ok(out),
    }
}

/// Upscaler 1 (`None` leaves the image as it is, as A1111 skips the step), then upscaler 2 at
/// `visibility` when above 0 (PIL's `Image.blend`).
pub fn extras_upscale(
    img: &RgbImage,
    resize: ExtrasResize,
    first: Option<(&str, &Upscaler)>,
    second: Option<(&str, &Upscaler, f32)>,
    tiles: TileOptions,
) -> Result<ExtrasOutput> {
    let mut info = Vec::new();
    let Some((name, up)) = first else {
        return Ok(ExtrasOutput {
            image: img.clone(),
            info,
        });
    };
    let mut out = upscale_one(img, up, resize, tiles, &mut info)?;
    info.push(("Postprocess upscaler".into(), name.to_string()));
    if let Some((name2, up2, visibility)) = second.filter(|s| s.2 > 0.0) {
        let other = upscale_one(img, up2, resize, tiles, &mut info)?;
        out = blend(&out, &other, visibility);
        info.push(("Postprocess upscaler 2".into(), name2.to_string()));
    }
    Ok(ExtrasOutput { image: out, info })
}

/// `img` pasted centred on a black `width` x `height` canvas (PIL's `paste` at
/// `(W // 2 - w // 2, H // 2 - h // 2)`, clipped).
pub fn paste_centred(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    let x0 = (width / 2) as isize - (img.width / 2) as isize;
    let y0 = (height / 2) as isize - (img.height / 2) as isize;
    let mut data = vec![0u8; width * height * 3];
    for y in 0..height as isize {
        let sy = y - y0;
        if sy < 0 || sy >= img.height as isize {
            continue;
        }
        for x in 0..width as isize {
            let sx = x - x0;
            if sx < 0 || sx >= img.width as isize {
                continue;
            }
            let s = (sy as usize * img.width + sx as usize) * 3;
            let d = (y as usize * width + x as usize) * 3;
            data[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    RgbImage {
        width,
        height,
        data,
    }
}

/// PIL's `Image.blend(a, b, alpha)`: `a + alpha * (b - a)`, truncated. Same sizes (both come from
/// the same resize); a size mismatch keeps `a`.
pub fn blend(a: &RgbImage, b: &RgbImage, alpha: f32) -> RgbImage {
    if (a.width, a.height) != (b.width, b.height) {
        return a.clone();
    }
    let alpha = f64::from(alpha);
    let data = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| {
            let v = f64::from(x) + alpha * (f64::from(y) - f64::from(x));
            (v as i64).clamp(0, 255) as u8
        })
        .collect();
    RgbImage {
        width: a.width,
        height: a.height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: usize, h: usize, v: u8) -> RgbImage {
        RgbImage::new(w, h, vec![v; w * h * 3]).unwrap()
    }

    #[test]
    fn a1111_fields_sizes_crop_and_blend() {
        let src = img(13, 10, 200);
        let tiles = TileOptions::default();
        let out = extras_upscale(
            &src,
            ExtrasResize::By(2.0),
            Some(("Lanczos", &Upscaler::Lanczos)),
            None,
            tiles,
        )
        .unwrap();
        assert_eq!((out.image.width, out.image.height), (24, 16));
        assert_eq!(
            out.infotext(),
            "Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos"
        );
        // To 26x30 with crop: scale max(26/13, 30/10) = 3 -> 39x30, rounded down to multiples of
        // 8: 32x24, pasted centred on a black 26x30 canvas (3 black rows above and below).
        let resize = ExtrasResize::To {
            width: 26,
            height: 30,
            crop: true,
        };
        let out = extras_upscale(
            &src,
            resize,
            Some(("Nearest", &Upscaler::Nearest)),
            Some(("Lanczos", &Upscaler::Lanczos, 0.5)),
            tiles,
        )
        .unwrap();
        assert_eq!((out.image.width, out.image.height), (26, 30));
        assert_eq!(&out.image.data[..3], [0, 0, 0]);
        assert_eq!(out.image.data[(3 * 26 + 5) * 3], 200);
        assert_eq!(
            out.infotext(),
            "Postprocess upscale to: 26x30, Postprocess crop to: 26x30, Postprocess upscaler: \
             Nearest, Postprocess upscaler 2: Lanczos"
        );
        // Upscaler "None": the image as it was, no fields.
        let out = extras_upscale(&src, ExtrasResize::By(2.0), None, None, tiles).unwrap();
        assert_eq!(out.image, src);
        assert!(out.info.is_empty());
    }

    #[test]
    fn paste_centres_and_clips_and_blend_truncates() {
        let p = paste_centred(&img(2, 2, 9), 4, 3);
        // x0 = 2 - 1 = 1, y0 = 1 - 1 = 0: rows 0-1, columns 1-2.
        let at = |x: usize, y: usize| p.data[(y * 4 + x) * 3];
        assert_eq!(
            [at(0, 0), at(1, 0), at(2, 1), at(3, 1), at(1, 2)],
            [0, 9, 9, 0, 0]
        );
        let big = paste_centred(&img(6, 6, 5), 2, 2);
        assert_eq!(big.data, vec![5; 12]);
        assert_eq!(
            blend(&img(1, 1, 10), &img(1, 1, 15), 0.5).data,
            [12, 12, 12]
        );
        assert_eq!(python_float(2.0), "2.0");
        assert_eq!(python_float(1.5), "1.5");
    }
}
