//! Tiled upscaling (A1111's ESRGAN_tile / ESRGAN_tile_overlap): the image is cut into overlapping
//! tiles that run one after another, so the device holds one tile's activations at a time; each
//! tile's output is blended into a host-side image with weights that ramp linearly across the
//! overlap, which hides the tile edges (where the convolutions saw zero padding instead of the
//! neighbouring pixels). Sizes are in input pixels.

use kiln_runtime::{Error, Result};

use crate::image::RgbImage;

const OP: &str = "upscale tiling";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileOptions {
    /// Tile side in input pixels; 0 runs the whole image at once.
    pub tile: usize,
    /// Pixels neighbouring tiles share (at least), blended across.
    pub overlap: usize,
}

impl Default for TileOptions {
    /// A1111's defaults: ESRGAN_tile 192, ESRGAN_tile_overlap 8.
    fn default() -> Self {
        TileOptions {
            tile: 192,
            overlap: 8,
        }
    }
}

impl TileOptions {
    /// One tile: the whole image.
    pub const WHOLE: TileOptions = TileOptions {
        tile: 0,
        overlap: 0,
    };

    /// Checks that the two ramps of a tile (one per neighbour) do not cross: `2 * overlap < tile`.
    pub fn new(tile: usize, overlap: usize) -> Result<TileOptions> {
        if tile != 0 && 2 * overlap >= tile {
            return Err(Error::shape(
                OP,
                format!(
                    "tile {tile} with overlap {overlap}: the tile must be more than twice the \
                     overlap (or 0 for no tiling)"
                ),
            ));
        }
        Ok(TileOptions { tile, overlap })
    }

    /// The (start, length) of each tile along an axis of `len` pixels: evenly spread, the first
    /// at 0 and the last ending at `len`, neighbours sharing at least `overlap` pixels.
    pub fn spans(&self, len: usize) -> Vec<(usize, usize)> {
        if self.tile == 0 || len <= self.tile {
            return vec![(0, len)];
        }
        let (t, o) = (self.tile, self.overlap.min(self.tile - 1));
        let n = (len - o).div_ceil(t - o);
        (0..n).map(|i| (i * (len - t) / (n - 1), t)).collect()
    }
}

/// A host image as f32 planes [C, H, W] (RGB, nominally in [0, 1]): what the models take and give.
#[derive(Clone, Debug, PartialEq)]
pub struct Planes {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Planes {
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Planes> {
        if data.len() != channels * height * width || height == 0 || width == 0 {
            return Err(Error::shape(
                "planes",
                format!(
                    "{} values for a {channels}x{height}x{width} image",
                    data.len()
                ),
            ));
        }
        Ok(Planes {
            channels,
            height,
            width,
            data,
        })
    }

    pub fn from_rgb(img: &RgbImage) -> Result<Planes> {
        let (h, w) = (img.height, img.width);
        if img.data.len() != h * w * 3 || h == 0 || w == 0 {
            return Err(Error::shape(
                "upscale",
                format!("{w}x{h} RGB image with {} bytes", img.data.len()),
            ));
        }
        let mut data = vec![0.0f32; 3 * h * w];
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                data[c * h * w + i] = f32::from(px[c]) / 255.0;
            }
        }
        Planes::new(3, h, w, data)
    }

    /// Clamped to [0, 1] and rounded to 8 bits.
    pub fn to_rgb(&self) -> Result<RgbImage> {
        let n = self.height * self.width;
        let mut data = vec![0u8; n * 3];
        for i in 0..n {
            for c in 0..3.min(self.channels) {
                let v = self.data[c * n + i];
                data[i * 3 + c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        RgbImage::new(self.width, self.height, data)
            .map_err(|e| Error::shape("upscale", e.to_string()))
    }

    /// The `h x w` region at (`y`, `x`), reflect-padded (PyTorch's 'reflect', edge not repeated)
    /// at the bottom and right up to multiples of `multiple`, as Real-ESRGAN pads its input.
    pub fn crop_padded(&self, y: usize, x: usize, h: usize, w: usize, multiple: usize) -> Planes {
        let (ph, pw) = (h.next_multiple_of(multiple), w.next_multiple_of(multiple));
        let reflect = |i: usize, n: usize| {
            if i < n || n == 1 {
                i.min(n - 1)
            } else {
                (2 * (n - 1)).saturating_sub(i)
            }
        };
        let mut data = Vec::with_capacity(self.channels * ph * pw);
        for c in 0..self.channels {
            for r in 0..ph {
                let sy = y + reflect(r, h);
                let row = &self.data[(c * self.height + sy) * self.width..][..self.width];
                data.extend((0..pw).map(|q| row[x + reflect(q, w)]));
            }
        }
        Planes {
            channels: self.channels,
            height: ph,
            width: pw,
            data,
        }
    }
}

/// Blend weight of position `p` of a tile `len` long whose neighbours (before, after) share
/// `overlap` pixels with it: 0 over the outer quarter of the overlap (pixels whose convolutions
/// reached past the tile edge into zero padding, discarded), then linear up to 1 at its far end.
/// Two neighbours' weights then add up to 1 across an overlap of exactly `overlap`.
pub fn ramp_weight(p: usize, len: usize, overlap: usize, before: bool, after: bool) -> f32 {
    if overlap == 0 {
        return 1.0;
    }
    let margin = (overlap / 4) as f32;
    let ramp = |d: f32| ((d - margin) / (overlap as f32 - 2.0 * margin)).clamp(0.0, 1.0);
    let mut w = 1.0f32;
    if before {
        w = w.min(ramp(p as f32 + 0.5));
    }
    if after {
        w = w.min(ramp((len - p) as f32 - 0.5));
    }
    w
}

/// Runs `run` on each tile of `input`, each output `scale` times the tile, and blends the outputs
/// into one `scale` times the input. A model that `pixel_unshuffle`s by `multiple` sees the image
/// reflect-padded at the bottom and right to a multiple of it (Real-ESRGAN's pre-padding, cropped
/// off the output), and tiles that start at multiples of it, so each tile groups the pixels into
/// the same blocks the whole image would.
pub fn run_tiled(
    input: &Planes,
    tiles: TileOptions,
    multiple: usize,
    scale: usize,
    mut run: impl FnMut(&Planes) -> Result<Planes>,
) -> Result<Planes> {
    let m = multiple.max(1);
    let padded = input.crop_padded(0, 0, input.height, input.width, m);
    // Tiles and overlap in blocks of m pixels.
    let blocks = if tiles.tile == 0 {
        TileOptions::WHOLE
    } else {
        let tile = (tiles.tile / m).max(1);
        let overlap = tiles.overlap.div_ceil(m).min(tile.saturating_sub(1) / 2);
        TileOptions { tile, overlap }
    };
    let spans = |len: usize| -> Vec<(usize, usize)> {
        blocks
            .spans(len / m)
            .into_iter()
            .map(|(s, l)| (s * m, l * m))
            .collect()
    };
    let (rows, cols) = (spans(padded.height), spans(padded.width));
    let (oh, ow) = (padded.height * scale, padded.width * scale);
    let channels = input.channels;
    let mut acc = vec![0.0f32; channels * oh * ow];
    let mut weight = vec![0.0f32; oh * ow];
    let ramp = blocks.overlap * m * scale;
    for (ri, &(y, th)) in rows.iter().enumerate() {
        for (ci, &(x, tw)) in cols.iter().enumerate() {
            let tile = padded.crop_padded(y, x, th, tw, 1);
            let out = run(&tile)?;
            let (h, w) = (th * scale, tw * scale);
            if out.channels != channels || out.height != h || out.width != w {
                return Err(Error::shape(
                    OP,
                    format!(
                        "a {tw}x{th} tile gave a {}x{} output with {} channels, expected {w}x{h} \
                         with {channels}",
                        out.width, out.height, out.channels
                    ),
                ));
            }
            let wy: Vec<f32> = (0..h)
                .map(|p| ramp_weight(p, h, ramp, ri > 0, ri + 1 < rows.len()))
                .collect();
            let wx: Vec<f32> = (0..w)
                .map(|p| ramp_weight(p, w, ramp, ci > 0, ci + 1 < cols.len()))
                .collect();
            for (r, &wyr) in wy.iter().enumerate() {
                let o = (y * scale + r) * ow + x * scale;
                for (q, &wxq) in wx.iter().enumerate() {
                    weight[o + q] += wyr * wxq;
                }
                for c in 0..channels {
                    let src = &out.data[(c * h + r) * w..][..w];
                    let dst = &mut acc[c * oh * ow + o..][..w];
                    for ((d, &v), &wxq) in dst.iter_mut().zip(src).zip(&wx) {
                        *d += wyr * wxq * v;
                    }
                }
            }
        }
    }
    // Back to the input's own size times the scale.
    let (fh, fw) = (input.height * scale, input.width * scale);
    let mut data = Vec::with_capacity(channels * fh * fw);
    for c in 0..channels {
        for r in 0..fh {
            let row = &acc[c * oh * ow + r * ow..][..fw];
            let wrow = &weight[r * ow..][..fw];
            data.extend(row.iter().zip(wrow).map(|(v, w)| v / w));
        }
    }
    Planes::new(channels, fh, fw, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_odd_sizes_with_at_least_the_overlap() {
        let t = TileOptions::new(8, 2).unwrap();
        for len in [1, 7, 8, 9, 13, 14, 15, 31, 100, 193] {
            let spans = t.spans(len);
            assert_eq!(spans[0].0, 0, "len {len}");
            let (s, l) = *spans.last().unwrap();
            assert_eq!(s + l, len, "len {len}: last tile ends at the edge");
            for pair in spans.windows(2) {
                let shared = pair[0].0 + pair[0].1 - pair[1].0;
                assert!(shared >= 2 && pair[1].0 > pair[0].0, "len {len}: {spans:?}");
            }
        }
        assert_eq!(t.spans(13), [(0, 8), (5, 8)]);
        assert_eq!(t.spans(15), [(0, 8), (3, 8), (7, 8)]);
        assert_eq!(TileOptions::WHOLE.spans(1000), [(0, 1000)]);
        assert!(TileOptions::new(8, 4).is_err());
    }

    #[test]
    fn reflect_padding_matches_pytorch() {
        // One row 0..5, padded to a multiple of 4 -> 8: F.pad(mode='reflect') gives 0 1 2 3 4 3 2 1.
        let p = Planes::new(1, 1, 5, (0..5).map(|v| v as f32).collect()).unwrap();
        let padded = p.crop_padded(0, 0, 1, 5, 4);
        assert_eq!(padded.height, 4);
        assert_eq!(&padded.data[..8], [0., 1., 2., 3., 4., 3., 2., 1.]);
        // A crop reflects within itself: columns 1..4 = 1 2 3, padded to 4 -> 1 2 3 2.
        assert_eq!(&p.crop_padded(0, 1, 1, 3, 4).data[..4], [1., 2., 3., 2.]);
    }

    #[test]
    fn blending_an_exact_function_is_exact() {
        // A "model" that upscales by nearest x2 is the same on any tile, so tiling must not change
        // it: every weight sum is positive and the blend is a weighted mean of equal values.
        let (h, w) = (13, 10);
        let data: Vec<f32> = (0..3 * h * w).map(|i| (i % 17) as f32 / 16.0).collect();
        let input = Planes::new(3, h, w, data).unwrap();
        let nearest = |p: &Planes| {
            let mut d = Vec::new();
            for c in 0..p.channels {
                for r in 0..2 * p.height {
                    for q in 0..2 * p.width {
                        d.push(p.data[(c * p.height + r / 2) * p.width + q / 2]);
                    }
                }
            }
            Planes::new(p.channels, 2 * p.height, 2 * p.width, d)
        };
        let whole = run_tiled(&input, TileOptions::WHOLE, 1, 2, nearest).unwrap();
        for (tile, overlap) in [(4, 1), (5, 2), (6, 0), (7, 3)] {
            let tiles = TileOptions::new(tile, overlap).unwrap();
            let tiled = run_tiled(&input, tiles, 1, 2, nearest).unwrap();
            for (a, b) in tiled.data.iter().zip(&whole.data) {
                assert!(
                    (a - b).abs() < 1e-6,
                    "tile {tile} overlap {overlap}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn tiles_start_at_multiples_of_the_unshuffle_factor() {
        let input = Planes::new(1, 19, 21, (0..399).map(|v| v as f32).collect()).unwrap();
        let mut seen = Vec::new();
        let tiles = TileOptions::new(12, 2).unwrap();
        let out = run_tiled(&input, tiles, 4, 1, |t| {
            seen.push((t.height, t.width, t.data[0]));
            Ok(t.clone())
        })
        .unwrap();
        // Padded to 20x24 (5x6 blocks of 4); tiles of 3 blocks with 1 block of overlap: rows at
        // blocks 0 and 2, columns at 0, 1 and 3.
        for &(h, w, first) in &seen {
            assert_eq!((h, w), (12, 12));
            let (y, x) = (first as usize / 21, first as usize % 21);
            assert_eq!((y % 4, x % 4), (0, 0), "tile at ({y}, {x})");
        }
        assert_eq!(seen.len(), 3 * 2);
        assert_eq!(out, input);
    }

    #[test]
    fn rgb_round_trips_through_planes() {
        let img = RgbImage::new(3, 2, (0..18).map(|v| v * 14).collect()).unwrap();
        let p = Planes::from_rgb(&img).unwrap();
        assert_eq!(p.data[6], 14.0 / 255.0); // green of pixel 0
        assert_eq!(p.to_rgb().unwrap(), img);
    }
}
