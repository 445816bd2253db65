//! PIL's NEAREST resize (the "Nearest" upscaler): output pixel x takes input
//! `floor((x + 0.5) * in / out)`.

use kiln_runtime::{Error, Result};

use crate::image::RgbImage;

pub fn resize_nearest(img: &RgbImage, width: usize, height: usize) -> Result<RgbImage> {
    if width == 0 || height == 0 || img.width == 0 || img.height == 0 {
        return Err(Error::shape(
            "resize_nearest",
            format!("{}x{} to {width}x{height}", img.width, img.height),
        ));
    }
    let src = |o: usize, out: usize, inp: usize| {
        (((o as f64 + 0.5) * inp as f64 / out as f64) as usize).min(inp - 1)
    };
    let xs: Vec<usize> = (0..width).map(|x| src(x, width, img.width)).collect();
    let mut data = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        let row = &img.data[src(y, height, img.height) * img.width * 3..][..img.width * 3];
        for &x in &xs {
            data.extend_from_slice(&row[x * 3..x * 3 + 3]);
        }
    }
    RgbImage::new(width, height, data).map_err(|e| Error::shape("resize_nearest", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_repeats_pixels_and_picks_centres_when_shrinking() {
        let img = RgbImage::new(2, 1, vec![10, 20, 30, 40, 50, 60]).unwrap();
        let up = resize_nearest(&img, 4, 2).unwrap();
        assert_eq!(
            &up.data[..12],
            [10, 20, 30, 10, 20, 30, 40, 50, 60, 40, 50, 60]
        );
        assert_eq!(up.data[..12], up.data[12..]);
        // 3 -> 2: centres 0.75 and 2.25 -> pixels 0 and 2 (PIL gives the same).
        let img = RgbImage::new(3, 1, (1..=9).collect()).unwrap();
        assert_eq!(resize_nearest(&img, 2, 1).unwrap().data, [1, 2, 3, 7, 8, 9]);
    }
}
