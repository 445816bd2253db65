//! The A1111 ControlNet extension's "processor resolution": before a preprocessor that takes one
//! runs, the image is scaled so its short side is `processor_res` and padded on the right and
//! bottom to a multiple of 64 by repeating the edge pixels; the map is cropped back afterwards
//! (`resize_image_with_pad` in its `scripts/utils.py`). The padding matters to filters that see
//! neighbours (canny's Sobel, scribble_xdog's Gaussians) at the right and bottom edges.

use crate::image::{resize, RgbImage};

use super::{PreprocessError, ResizeMode};

/// The extension's default and slider range for canny, threshold and scribble_xdog.
pub const DEFAULT_RESOLUTION: usize = 512;
pub const MIN_RESOLUTION: usize = 64;
pub const MAX_RESOLUTION: usize = 2048;

/// `processor_res` as a client sends it: absent or negative (-1 is "unset") is the default.
pub fn processor_res(value: Option<f64>) -> Result<usize, PreprocessError> {
    match value {
        None => Ok(DEFAULT_RESOLUTION),
        Some(v) if v < 0.0 => Ok(DEFAULT_RESOLUTION),
        Some(v)
            if v.fract() == 0.0 && (MIN_RESOLUTION as f64..=MAX_RESOLUTION as f64).contains(&v) =>
        {
            Ok(v as usize)
        }
        Some(v) => Err(PreprocessError::Parameter {
            name: "processor_res",
            msg: format!(
                "{v} is not a whole number from {MIN_RESOLUTION} to {MAX_RESOLUTION} (-1: the \
                 preprocessor's default, {DEFAULT_RESOLUTION})"
            ),
        }),
    }
}

/// The extension's "Pixel Perfect" processor resolution (`pixel_perfect_resolution` in its
/// `internal_controlnet/external_code.py`): the control image's short side scaled as `resize`
/// will scale the image to the generation's `target` (width, height) — to fit inside for Resize
/// and Fill, to cover otherwise — so the preprocessor works at the output's own pixel density.
pub fn pixel_perfect_resolution(
    (width, height): (usize, usize),
    (target_w, target_h): (usize, usize),
    resize: ResizeMode,
) -> usize {
    let (kh, kw) = (
        target_h as f64 / height.max(1) as f64,
        target_w as f64 / width.max(1) as f64,
    );
    let k = match resize {
        ResizeMode::ResizeAndFill => kh.min(kw),
        ResizeMode::JustResize | ResizeMode::CropAndResize => kh.max(kw),
    };
    // numpy's round: half to even.
    ((k * width.min(height) as f64).round_ties_even() as usize).max(1)
}

/// `img` with its short side scaled to `res` and padded to multiples of 64, and the scaled size
/// to crop the preprocessor's output back to.
pub(super) fn scale_and_pad(
    img: &RgbImage,
    res: usize,
) -> Result<(RgbImage, usize, usize), PreprocessError> {
    let k = res as f64 / img.width.min(img.height) as f64;
    // numpy's round: half to even.
    let side = |n: usize| ((n as f64 * k).round_ties_even() as usize).max(1);
    let (w, h) = (side(img.width), side(img.height));
    let scaled = resize(img, w, h).map_err(|e| PreprocessError::Parameter {
        name: "processor_res",
        msg: e.to_string(),
    })?;
    let (pw, ph) = (w.div_ceil(64) * 64, h.div_ceil(64) * 64);
    let mut data = Vec::with_capacity(pw * ph * 3);
    for y in 0..ph {
        let row = &scaled.data[y.min(h - 1) * w * 3..][..w * 3];
        data.extend_from_slice(row);
        let last = &row[(w - 1) * 3..];
        for _ in w..pw {
            data.extend_from_slice(last);
        }
    }
    let padded = RgbImage {
        width: pw,
        height: ph,
        data,
    };
    Ok((padded, w, h))
}

/// The top-left `w` x `h` of `img` (the extension's `remove_pad`).
pub(super) fn unpad(img: &RgbImage, w: usize, h: usize) -> RgbImage {
    let data = img
        .data
        .chunks_exact(img.width * 3)
        .take(h)
        .flat_map(|row| &row[..w * 3])
        .copied()
        .collect();
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_perfect_scales_the_short_side_as_the_resize_mode_does() {
        // A 300x200 photo for a 768x512 output: both factors 2.56 -> 200 * 2.56 = 512.
        for mode in [
            ResizeMode::JustResize,
            ResizeMode::CropAndResize,
            ResizeMode::ResizeAndFill,
        ] {
            assert_eq!(pixel_perfect_resolution((300, 200), (768, 512), mode), 512);
        }
        // A square 100x100 map for 512 wide x 256 high: covering takes the larger factor (5.12),
        // fitting inside the smaller (2.56).
        let cover = pixel_perfect_resolution((100, 100), (512, 256), ResizeMode::CropAndResize);
        let fit = pixel_perfect_resolution((100, 100), (512, 256), ResizeMode::ResizeAndFill);
        assert_eq!((cover, fit), (512, 256));
        // numpy rounds half to even: 3 x 2.5 = 7.5 -> 8, 5 x 2.5 = 12.5 -> 12.
        assert_eq!(
            pixel_perfect_resolution((3, 3), (5, 5), ResizeMode::JustResize),
            5
        );
        assert_eq!(
            pixel_perfect_resolution((4, 6), (10, 15), ResizeMode::JustResize),
            10
        );
        assert_eq!(
            pixel_perfect_resolution((2, 2), (5, 5), ResizeMode::JustResize),
            5
        );
        assert_eq!(
            pixel_perfect_resolution((6, 4), (15, 10), ResizeMode::ResizeAndFill),
            10
        );
        assert_eq!(
            pixel_perfect_resolution((5, 8), (12, 20), ResizeMode::CropAndResize),
            12
        );
    }

    #[test]
    fn unset_values_take_the_default_and_bad_ones_are_refused() {
        assert_eq!(processor_res(None).unwrap(), 512);
        assert_eq!(processor_res(Some(-1.0)).unwrap(), 512);
        assert_eq!(processor_res(Some(768.0)).unwrap(), 768);
        for bad in [0.0, 63.0, 4096.0, 512.5] {
            let e = processor_res(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("processor_res"), "{e}");
        }
    }

    #[test]
    fn the_short_side_becomes_res_and_edges_repeat_to_64() {
        // 3x2, pixel value = 10 * x + y: short side 2 -> 64, so 96x64, padded to 128x64.
        let data = (0..2)
            .flat_map(|y| (0..3).flat_map(move |x| [10 * x + y, 0, 0]))
            .collect();
        let img = RgbImage::new(3, 2, data).unwrap();
        let (padded, w, h) = scale_and_pad(&img, 64).unwrap();
        assert_eq!((padded.width, padded.height, w, h), (128, 64, 96, 64));
        for y in 0..64 {
            let row = &padded.data[y * 128 * 3..][..128 * 3];
            let edge = &row[95 * 3..96 * 3];
            assert!(row[96 * 3..].chunks(3).all(|p| p == edge), "row {y}");
        }
        let back = unpad(&padded, w, h);
        assert_eq!((back.width, back.height), (96, 64));
        assert_eq!(back.data[..96 * 3], padded.data[..96 * 3]);
    }
}
