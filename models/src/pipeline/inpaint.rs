//! Inpainting inputs as diffusers' StableDiffusionInpaintPipeline prepares them: a binary mask
//! (white = repaint), the init image with the masked area zeroed, and the mask shrunk to the latent
//! grid with nearest-neighbour sampling.

use crate::image::{resize, GrayImage, RgbImage};

use super::error::Result;

/// The mask at image resolution as 0.0 / 1.0: PIL grayscale / 255, binarised at 0.5.
pub fn binarize(mask: &GrayImage) -> Vec<f32> {
    mask.data
        .iter()
        .map(|&v| if f32::from(v) / 255.0 < 0.5 { 0.0 } else { 1.0 })
        .collect()
}

/// `mask` resized to `width` x `height` (through RGB, as PIL resizes an "L" image channel-wise).
pub fn fit_mask(mask: &GrayImage, width: usize, height: usize) -> Result<GrayImage> {
    if mask.width == width && mask.height == height {
        return Ok(mask.clone());
    }
    let rgb = RgbImage::new(
        mask.width,
        mask.height,
        mask.data.iter().flat_map(|&g| [g, g, g]).collect(),
    )?;
    Ok(resize(&rgb, width, height)?.to_gray())
}

/// The init image in [-1, 1] with the area to repaint set to 0 (`init * (mask < 0.5)`, mid-grey
/// rather than black), as CHW floats: 0 has no exact 8-bit value, so this skips `image_to_tensor`.
pub fn masked_image(init: &RgbImage, mask: &[f32]) -> Vec<f32> {
    let (w, h) = (init.width, init.height);
    let mut chw = vec![0f32; 3 * w * h];
    for (p, px) in init.data.chunks_exact(3).enumerate() {
        let keep = if mask[p] < 0.5 { 1.0 } else { 0.0 };
        for c in 0..3 {
            chw[c * w * h + p] = (2.0 * (f32::from(px[c]) / 255.0) - 1.0) * keep;
        }
    }
    chw
}

/// torch's `interpolate(mode="nearest")` of an `h x w` plane to `oh x ow`: source index
/// `floor(dst * in / out)`.
pub fn nearest(plane: &[f32], (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f32> {
    let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        let iy = ((y as f32 * sy) as usize).min(h - 1);
        for x in 0..ow {
            let ix = ((x as f32 * sx) as usize).min(w - 1);
            out.push(plane[iy * w + ix]);
        }
    }
    out
}
