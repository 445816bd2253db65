//! A cheap preview of latents mid-generation: a fixed linear map from the 4 latent channels to RGB
//! (the factors A1111's "Approx cheap" preview uses for SD 1.x/2.x), scaled up to the image size
//! by pixel repetition. No VAE run, so it costs microseconds.

use kiln_models::image::png::encode_png;
use kiln_models::image::RgbImage;

/// Rows: latent channels; columns: R, G, B contributions.
const LATENT_RGB: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// Largest side of a preview, whatever the image size.
const MAX_SIDE: usize = 256;

/// A PNG preview of the first image of a `[batch, channels, height, width]` latent batch.
pub fn preview_png(latents: &[f32], [_, c, h, w]: [usize; 4], scale: usize) -> Option<Vec<u8>> {
    let plane = h * w;
    if c == 0 || plane == 0 || latents.len() < c * plane {
        return None;
    }
    let rgb = latent_rgb(&latents[..c * plane], c, plane);
    let s = scale.min(MAX_SIDE / h.max(w).max(1)).max(1);
    let (ow, oh) = (w * s, h * s);
    let mut data = Vec::with_capacity(ow * oh * 3);
    for y in 0..oh {
        for x in 0..ow {
            data.extend_from_slice(&rgb[(y / s) * w + x / s]);
        }
    }
    encode_png(&RgbImage::new(ow, oh, data).ok()?, &[]).ok()
}

/// 8-bit RGB per latent pixel: the linear map for 4-channel latents, else the channel mean as
/// gray; values in [-1, 1] map to [0, 255].
fn latent_rgb(latents: &[f32], c: usize, plane: usize) -> Vec<[u8; 3]> {
    let to8 = |v: f32| (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8;
    (0..plane)
        .map(|p| {
            if c == 4 {
                let mut rgb = [0.0f32; 3];
                for (ch, row) in LATENT_RGB.iter().enumerate() {
                    let v = latents[ch * plane + p];
                    for k in 0..3 {
                        rgb[k] += v * row[k];
                    }
                }
                rgb.map(to8)
            } else {
                let mean = (0..c).map(|ch| latents[ch * plane + p]).sum::<f32>() / c as f32;
                [to8(mean); 3]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_models::image::png::decode_png;

    #[test]
    fn maps_channels_and_scales_up() {
        // 1x2 latents, 4 channels: pixel 0 all zero (mid gray), pixel 1 only channel 0 = 1.
        let latents = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let png = preview_png(&latents, [1, 4, 1, 2], 8).unwrap();
        let img = decode_png(&png).unwrap().image;
        assert_eq!((img.width, img.height), (16, 8));
        assert_eq!(&img.data[..3], &[128, 128, 128]);
        // Pixel 1 starts at x = 8: (1 + 0.298) / 2 * 255 = 165.5 -> 165 or 166 after rounding.
        let px = &img.data[8 * 3..8 * 3 + 3];
        assert_eq!(px, &[to8(0.298), to8(0.207), to8(0.208)]);
        assert!(preview_png(&latents[..3], [1, 4, 1, 2], 8).is_none());
    }

    fn to8(v: f32) -> u8 {
        (((v + 1.0) / 2.0) * 255.0).round() as u8
    }

    #[test]
    fn previews_stay_small() {
        let latents = vec![0.5; 4 * 64 * 64];
        let img = decode_png(&preview_png(&latents, [1, 4, 64, 64], 8).unwrap())
            .unwrap()
            .image;
        assert_eq!((img.width, img.height), (256, 256));
    }
}
