//! The extension's `scribble_xdog`: two Gaussian blurs of the image (σ 0.5 and 5) in float, the
//! darkest channel of their difference as a "difference of Gaussians" line map, thresholded.

use super::gaussian::gaussian_blur;
use crate::image::{GrayImage, RgbImage};

pub fn scribble_xdog(img: &RgbImage, threshold: f32) -> GrayImage {
    let (w, h) = (img.width, img.height);
    let float: Vec<f32> = img.data.iter().map(|&v| f32::from(v)).collect();
    let fine = gaussian_blur(&float, w, h, 3, 0.5);
    let coarse = gaussian_blur(&float, w, h, 3, 5.0);
    let data = fine
        .chunks_exact(3)
        .zip(coarse.chunks_exact(3))
        .map(|(f, c)| {
            let min = (0..3).map(|k| c[k] - f[k]).fold(f32::INFINITY, f32::min);
            // numpy: `dog = (255 - min).clip(0, 255).astype(uint8)` truncates toward zero.
            let dog = (255.0 - min).clamp(0.0, 255.0) as u8;
            // `2 * (255 - dog)` is uint8 arithmetic in the extension and wraps at 256; kept so a
            // scribble matches A1111's for the same image.
            let line = (255 - dog).wrapping_mul(2);
            if f32::from(line) > threshold {
                255
            } else {
                0
            }
        })
        .collect();
    GrayImage {
        width: w,
        height: h,
        data,
    }
}
