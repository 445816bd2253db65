//! Tiled VAE decode and encode (diffusers' `enable_tiling`, A1111's "tiled VAE"): the latent plane
//! is cut into overlapping tiles that run one after another, so the device holds the activations of
//! one tile at a time; each tile's output is blended into a host-side image with weights that ramp
//! linearly across the overlap, which hides the tile edges (where the convolutions saw zero padding
//! and the mid-block attention saw only its own tile).
//!
//! Tiles and overlap are counted in latent pixels for both directions: decode cuts the latents and
//! blends images, encode cuts the image at `tile * f` pixels and blends latent moments.

use kiln_runtime::{Error, Result, Tensor};

const OP: &str = "vae tiling";

/// Tile size and overlap between neighbouring tiles, in latent pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaeTiling {
    pub tile: usize,
    pub overlap: usize,
}

impl Default for VaeTiling {
    /// diffusers' defaults for SD: 64-latent (512-pixel) tiles overlapping by a quarter.
    fn default() -> Self {
        VaeTiling {
            tile: 64,
            overlap: 16,
        }
    }
}

impl VaeTiling {
    /// Checks that tiles are at least 2 latent pixels and that the two ramps of a tile (one per
    /// neighbour) do not cross: `2 * overlap <= tile`.
    pub fn new(tile: usize, overlap: usize) -> Result<VaeTiling> {
        if tile < 2 || 2 * overlap > tile {
            return Err(Error::shape(
                OP,
                format!(
                    "tile {tile} with overlap {overlap} (latent pixels): the tile must be at \
                     least 2 and at least twice the overlap"
                ),
            ));
        }
        Ok(VaeTiling { tile, overlap })
    }

    /// Whether a `h x w` latent plane needs more than one tile.
    pub fn splits(&self, h: usize, w: usize) -> bool {
        h > self.tile || w > self.tile
    }

    /// Tile starts along an axis of `len` latent pixels: the fewest tiles whose overlaps are at least
    /// `overlap`, spread evenly so the first starts at 0 and the last ends at `len`.
    pub fn starts(&self, len: usize) -> Vec<usize> {
        if len <= self.tile {
            return vec![0];
        }
        let stride = self.tile - self.overlap;
        let count = (len - self.overlap).div_ceil(stride);
        let span = len - self.tile;
        (0..count).map(|i| i * span / (count - 1)).collect()
    }
}

/// Blend weights along one axis for tile `i` of `starts` (each `extent` latent pixels long), at
/// `scale` output pixels per latent pixel: 1 inside, ramping linearly down towards 0 across the
/// whole overlap with each neighbour. Where only two tiles overlap, their ramps sum to 1; where
/// three do (short axes can force that), the per-pixel normalisation in `Blend` keeps the result a
/// weighted mean.
fn axis_weights(starts: &[usize], i: usize, extent: usize, scale: usize) -> Vec<f32> {
    let size = extent * scale;
    let left = (i > 0).then(|| ((starts[i - 1] + extent - starts[i]) * scale) as f32);
    let right = starts
        .get(i + 1)
        .map(|&next| ((starts[i] + extent - next) * scale) as f32);
    (0..size)
        .map(|x| {
            let mut w = 1.0f32;
            if let Some(ramp) = left.filter(|&r| r > 0.0) {
                w = w.min((x as f32 + 0.5) / ramp);
            }
            if let Some(ramp) = right.filter(|&r| r > 0.0) {
                w = w.min(((size - x) as f32 - 0.5) / ramp);
            }
            w
        })
        .collect()
}

/// Runs `f` tile by tile over `input` [N, C, gh * in_scale, gw * in_scale] (a `gh x gw` latent grid)
/// and blends the outputs [N, out_c, th * out_scale, tw * out_scale] into one
/// [N, out_c, gh * out_scale, gw * out_scale] tensor on `input`'s device in the outputs' dtype.
pub(crate) fn run_tiled(
    tiling: &VaeTiling,
    input: &Tensor,
    (gh, gw): (usize, usize),
    in_scale: usize,
    out_scale: usize,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let s = input.shape().to_vec();
    let (n, c) = (s[0], s[1]);
    // The input is read to the host once; each tile is cut there and uploaded on its own, so the
    // device never holds more than one tile's input besides the caller's tensor.
    let values = input.to_vec_f32()?;
    let (ys, xs) = (tiling.starts(gh), tiling.starts(gw));
    let (th, tw) = (gh.min(tiling.tile), gw.min(tiling.tile));
    let (oh, ow) = (gh * out_scale, gw * out_scale);
    let mut blend: Option<Blend> = None;
    for (iy, &y) in ys.iter().enumerate() {
        let wy = axis_weights(&ys, iy, th, out_scale);
        for (ix, &x) in xs.iter().enumerate() {
            let wx = axis_weights(&xs, ix, tw, out_scale);
            let region = (y * in_scale, x * in_scale, th * in_scale, tw * in_scale);
            let tile = crop(&values, [n, c, s[2], s[3]], region);
            let tile = Tensor::from_f32(
                input.device(),
                &[n, c, region.2, region.3],
                input.dtype(),
                &tile,
            )?;
            let out = f(&tile)?;
            let want = [th * out_scale, tw * out_scale];
            if out.rank() != 4 || out.dim(0) != n || out.shape()[2..] != want {
                return Err(Error::shape(
                    OP,
                    format!(
                        "a tile {:?} gave {:?}, expected [{n}, C, {}, {}]",
                        tile.shape(),
                        out.shape(),
                        want[0],
                        want[1]
                    ),
                ));
            }
            let b = blend.get_or_insert_with(|| Blend::new(n, out.dim(1), oh, ow));
            b.add(&out.to_vec_f32()?, (y * out_scale, x * out_scale), &wy, &wx);
            let dtype = out.dtype();
            b.dtype = Some(dtype);
        }
    }
    let blend = blend.ok_or_else(|| Error::shape(OP, "no tiles"))?;
    let dtype = blend.dtype.unwrap_or(input.dtype());
    let shape = [n, blend.c, oh, ow];
    Tensor::from_f32(input.device(), &shape, dtype, &blend.finish())
}

/// The `(y, x, h, w)` window of an [N, C, H, W] array.
fn crop(
    values: &[f32],
    [n, c, h, w]: [usize; 4],
    (y0, x0, th, tw): (usize, usize, usize, usize),
) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * c * th * tw);
    for plane in values.chunks_exact(h * w).take(n * c) {
        for row in plane.chunks_exact(w).skip(y0).take(th) {
            out.extend_from_slice(&row[x0..x0 + tw]);
        }
    }
    out
}

/// A host-side weighted sum of tile outputs and the sum of their weights per pixel.
struct Blend {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    acc: Vec<f32>,
    weight: Vec<f32>,
    dtype: Option<kiln_runtime::DType>,
}

impl Blend {
    fn new(n: usize, c: usize, h: usize, w: usize) -> Blend {
        Blend {
            n,
            c,
            h,
            w,
            acc: vec![0.0; n * c * h * w],
            weight: vec![0.0; h * w],
            dtype: None,
        }
    }

    /// Adds `tile` [N, C, wy.len(), wx.len()] at `(y0, x0)` with weight `wy[i] * wx[j]`.
    fn add(&mut self, tile: &[f32], (y0, x0): (usize, usize), wy: &[f32], wx: &[f32]) {
        let (th, tw) = (wy.len(), wx.len());
        for (i, &a) in wy.iter().enumerate() {
            let row = (y0 + i) * self.w + x0;
            for (j, &b) in wx.iter().enumerate() {
                self.weight[row + j] += a * b;
            }
        }
        for (p, plane) in tile.chunks_exact(th * tw).enumerate().take(self.n * self.c) {
            let dst = &mut self.acc[p * self.h * self.w..(p + 1) * self.h * self.w];
            for (i, &a) in wy.iter().enumerate() {
                let row = (y0 + i) * self.w + x0;
                for (j, &b) in wx.iter().enumerate() {
                    dst[row + j] += a * b * plane[i * tw + j];
                }
            }
        }
    }

    fn finish(mut self) -> Vec<f32> {
        let plane = self.h * self.w;
        for chunk in self.acc.chunks_exact_mut(plane) {
            for (v, &w) in chunk.iter_mut().zip(&self.weight) {
                *v /= w;
            }
        }
        self.acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_runtime::{DType, Device};

    #[test]
    fn tiles_cover_the_axis_with_at_least_the_overlap() {
        let t = VaeTiling::new(8, 2).unwrap();
        assert_eq!(t.starts(8), vec![0]);
        assert_eq!(t.starts(5), vec![0]);
        for len in 9..60 {
            let s = t.starts(len);
            assert_eq!(s[0], 0);
            assert_eq!(s.last().unwrap() + 8, len, "len {len}");
            for pair in s.windows(2) {
                let overlap = pair[0] + 8 - pair[1];
                assert!((2..8).contains(&overlap), "len {len}: {s:?}");
            }
        }
        assert!(VaeTiling::new(8, 5).is_err());
        assert!(VaeTiling::new(1, 0).is_err());
    }

    #[test]
    fn ramps_of_exact_overlaps_sum_to_one() {
        let t = VaeTiling::new(8, 2).unwrap();
        // 14 = 8 + 6: tiles at 0 and 6 overlap by exactly 2 latent pixels = 16 output pixels.
        assert_eq!(t.starts(14), vec![0, 6]);
        let starts = t.starts(14);
        let (a, b) = (
            axis_weights(&starts, 0, 8, 8),
            axis_weights(&starts, 1, 8, 8),
        );
        for k in 0..16 {
            let sum = a[48 + k] + b[k];
            assert!((sum - 1.0).abs() < 1e-6, "{k}: {sum}");
        }
        assert!(a[..48].iter().all(|&w| w == 1.0));
        assert!(b[16..].iter().all(|&w| w == 1.0));
    }

    /// An identity "model" tiled must give back its input exactly (weights normalise), and a
    /// x2 nearest upsampler its upsampled input.
    #[test]
    fn blending_an_identity_reproduces_the_input() {
        let t = VaeTiling::new(4, 1).unwrap();
        let (h, w) = (7, 10);
        let values: Vec<f32> = (0..2 * 3 * h * w)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let x = Tensor::from_f32(&Device::Cpu, &[2, 3, h, w], DType::F32, &values).unwrap();
        let same = run_tiled(&t, &x, (h, w), 1, 1, |t| Ok(t.clone())).unwrap();
        let got = same.to_vec_f32().unwrap();
        for (g, v) in got.iter().zip(&values) {
            assert!((g - v).abs() < 1e-5);
        }
        let up = run_tiled(&t, &x, (h, w), 1, 2, |t| {
            kiln_kernels::upsample::upsample_nearest2d(t, 2)
        })
        .unwrap();
        let want = kiln_kernels::upsample::upsample_nearest2d(&x, 2).unwrap();
        assert_eq!(up.shape(), want.shape());
        let want = want.to_vec_f32().unwrap();
        for (g, v) in up.to_vec_f32().unwrap().iter().zip(&want) {
            assert!((g - v).abs() < 1e-5);
        }
    }
}
