//! Outpainting: the image placed on a larger canvas, the new border (and a band of `blur` pixels
//! inside the old edge, so the seam is redrawn) marked for repainting, the border pre-filled by
//! stretching the edge pixels outwards so img2img noise starts from plausible colours; after
//! generation the original is laid back over the result with a linear ramp across that band, so
//! the kept area is the input's own pixels and the seam fades rather than cuts (what A1111's
//! "outpainting mk2" does with its mask blur).

use super::error::{PipelineError, Result};
use crate::image::{GrayImage, RgbImage};

/// Pixels added on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outpaint {
    pub left: usize,
    pub top: usize,
    pub right: usize,
    pub bottom: usize,
    /// Width of the band inside the old edge that is redrawn and blended.
    pub blur: usize,
}

/// The canvas to inpaint and where the original sits on it.
pub struct OutpaintCanvas {
    pub image: RgbImage,
    /// White = repaint.
    pub mask: GrayImage,
    /// The original's top-left corner on the canvas.
    pub x: usize,
    pub y: usize,
}

impl Outpaint {
    /// `LEFT,TOP,RIGHT,BOTTOM` in pixels.
    pub fn parse(text: &str, blur: usize) -> Result<Outpaint> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let bad = || {
            PipelineError::invalid(format!(
                "outpaint {text:?}: expected LEFT,TOP,RIGHT,BOTTOM, four whole numbers of pixels"
            ))
        };
        if parts.len() != 4 {
            return Err(bad());
        }
        let v: Vec<usize> = parts
            .iter()
            .map(|p| p.parse::<usize>().map_err(|_| bad()))
            .collect::<Result<_>>()?;
        let o = Outpaint {
            left: v[0],
            top: v[1],
            right: v[2],
            bottom: v[3],
            blur,
        };
        if v.iter().all(|&p| p == 0) {
            return Err(PipelineError::invalid(format!(
                "outpaint {text:?}: every side is 0, nothing to extend"
            )));
        }
        Ok(o)
    }

    /// The canvas for `img`, its size rounded up to a multiple of `multiple` by growing the right
    /// and bottom borders.
    pub fn canvas(&self, img: &RgbImage, multiple: usize) -> Result<OutpaintCanvas> {
        let round = |v: usize| v.div_ceil(multiple) * multiple;
        let w = round(img.width + self.left + self.right);
        let h = round(img.height + self.top + self.bottom);
        let (x0, y0) = (self.left, self.top);
        let mut data = Vec::with_capacity(w * h * 3);
        let mut mask = Vec::with_capacity(w * h);
        for y in 0..h {
            let sy = y.saturating_sub(y0).min(img.height - 1);
            for x in 0..w {
                let sx = x.saturating_sub(x0).min(img.width - 1);
                let i = (sy * img.width + sx) * 3;
                data.extend_from_slice(&img.data[i..i + 3]);
                let inside = self.depth_inside(x, y, x0, y0, img.width, img.height, w, h);
                mask.push(if inside.is_some_and(|d| d >= self.blur) {
                    0
                } else {
                    255
                });
            }
        }
        Ok(OutpaintCanvas {
            image: RgbImage::new(w, h, data)?,
            mask: GrayImage::new(w, h, mask)?,
            x: x0,
            y: y0,
        })
    }

    /// How far (x, y) lies inside the original from an edge that was extended (`None` outside
    /// it); sides that were not extended do not count, so the original reaches the canvas edge
    /// there untouched.
    #[allow(clippy::too_many_arguments)]
    fn depth_inside(
        &self,
        x: usize,
        y: usize,
        x0: usize,
        y0: usize,
        iw: usize,
        ih: usize,
        w: usize,
        h: usize,
    ) -> Option<usize> {
        if x < x0 || y < y0 || x >= x0 + iw || y >= y0 + ih {
            return None;
        }
        let mut d = usize::MAX;
        if self.left > 0 {
            d = d.min(x - x0);
        }
        if self.top > 0 {
            d = d.min(y - y0);
        }
        // Right / bottom grew if asked for, or by the rounding to the size multiple.
        if x0 + iw < w {
            d = d.min(x0 + iw - 1 - x);
        }
        if y0 + ih < h {
            d = d.min(y0 + ih - 1 - y);
        }
        Some(d)
    }

    /// `generated` (the canvas's size) with the original laid back over it: its own pixels
    /// deeper than `blur` inside, a linear blend across the band, the generation outside.
    pub fn blend_seam(
        &self,
        generated: &RgbImage,
        original: &RgbImage,
        x0: usize,
        y0: usize,
    ) -> RgbImage {
        let (w, h) = (generated.width, generated.height);
        let mut out = generated.clone();
        for y in 0..h {
            for x in 0..w {
                let Some(d) =
                    self.depth_inside(x, y, x0, y0, original.width, original.height, w, h)
                else {
                    continue;
                };
                let alpha = if self.blur == 0 || d >= self.blur {
                    1.0
                } else {
                    (d as f32 + 1.0) / (self.blur as f32 + 1.0)
                };
                let o = ((y - y0) * original.width + (x - x0)) * 3;
                let g = (y * w + x) * 3;
                for c in 0..3 {
                    let v = alpha * f32::from(original.data[o + c])
                        + (1.0 - alpha) * f32::from(generated.data[g + c]);
                    out.data[g + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: usize, h: usize) -> RgbImage {
        let data = (0..w * h)
            .flat_map(|i| [(i % 251) as u8, (i / w * 7 % 256) as u8, 99])
            .collect();
        RgbImage::new(w, h, data).unwrap()
    }

    #[test]
    fn parse_checks_its_four_numbers() {
        let o = Outpaint::parse("8, 0,16,4", 2).unwrap();
        assert_eq!((o.left, o.top, o.right, o.bottom), (8, 0, 16, 4));
        for bad in ["8,0,16", "a,b,c,d", "-8,0,0,0", "0,0,0,0"] {
            let e = Outpaint::parse(bad, 2).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_canvas_holds_the_original_and_masks_the_border_and_band() {
        let img = gradient(20, 12);
        let o = Outpaint::parse("8,0,3,0", 2).unwrap();
        let c = o.canvas(&img, 8).unwrap();
        // 20 + 8 + 3 = 31 -> 32 wide; 12 -> 16 high (bottom grows by the rounding).
        assert_eq!((c.image.width, c.image.height, c.x, c.y), (32, 16, 8, 0));
        let m = |x: usize, y: usize| c.mask.data[y * 32 + x];
        assert_eq!(m(0, 0), 255); // new left border
        assert_eq!(m(8, 5), 255); // inside, within the band of the extended left edge
        assert_eq!(m(10, 5), 0); // deep enough inside
        assert_eq!(m(15, 0), 0); // top edge was not extended: kept
        assert_eq!(m(15, 11), 255); // bottom grew by rounding: within the band
                                    // The original's pixels sit at their place; the border repeats the edge.
        let px = |im: &RgbImage, x: usize, y: usize| im.data[(y * im.width + x) * 3];
        assert_eq!(px(&c.image, 8 + 5, 3), px(&img, 5, 3));
        assert_eq!(px(&c.image, 0, 3), px(&img, 0, 3));
    }

    #[test]
    fn blending_keeps_the_original_inside_and_ramps_across_the_band() {
        let img = gradient(20, 12);
        let o = Outpaint::parse("8,0,4,0", 4).unwrap();
        let c = o.canvas(&img, 8).unwrap();
        let black = RgbImage::new(32, 16, vec![0; 32 * 16 * 3]).unwrap();
        let out = o.blend_seam(&black, &img, c.x, c.y);
        let px = |im: &RgbImage, x: usize, y: usize| im.data[(y * im.width + x) * 3];
        assert_eq!(px(&out, 0, 2), 0); // generated border
        assert_eq!(px(&out, 8 + 10, 2), px(&img, 10, 2)); // deep inside: the original
                                                          // At the old edge, a fifth of the original (depth 0 of a 4-pixel band).
        let edge = f32::from(px(&img, 0, 2)) / 5.0;
        assert_eq!(px(&out, 8, 2), edge.round() as u8);
    }
}
