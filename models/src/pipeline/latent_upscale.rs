//! A1111's latent upscalers for hires fix: `torch.nn.functional.interpolate` of the first pass's
//! latents to the second pass's size, in the modes A1111 names "Latent", "Latent (antialiased)",
//! "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)" and
//! "Latent (nearest-exact)". Computed on the host: latents are small (4 x 128 x 128 at 1024 px).

use super::error::{PipelineError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatentUpscale {
    Bilinear,
    BilinearAntialiased,
    Bicubic,
    BicubicAntialiased,
    Nearest,
    NearestExact,
}

const MODES: [(&str, LatentUpscale); 6] = [
    ("Latent", LatentUpscale::Bilinear),
    ("Latent (antialiased)", LatentUpscale::BilinearAntialiased),
    ("Latent (bicubic)", LatentUpscale::Bicubic),
    (
        "Latent (bicubic antialiased)",
        LatentUpscale::BicubicAntialiased,
    ),
    ("Latent (nearest)", LatentUpscale::Nearest),
    ("Latent (nearest-exact)", LatentUpscale::NearestExact),
];

impl LatentUpscale {
    /// A1111's names, in the order its upscaler list shows them.
    pub fn names() -> impl Iterator<Item = &'static str> {
        MODES.iter().map(|(n, _)| *n)
    }

    /// The mode A1111 calls `name` (case-insensitive), if it is a latent one.
    pub fn from_name(name: &str) -> Option<LatentUpscale> {
        MODES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(_, m)| *m)
    }

    pub fn name(self) -> &'static str {
        MODES
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("Latent")
    }

    /// `latents` [planes, h, w] resized to [planes, out_h, out_w].
    pub fn resize(
        self,
        latents: &[f32],
        (h, w): (usize, usize),
        (out_h, out_w): (usize, usize),
    ) -> Result<Vec<f32>> {
        if h == 0 || w == 0 || out_h == 0 || out_w == 0 || !latents.len().is_multiple_of(h * w) {
            return Err(PipelineError::invalid(format!(
                "latent upscale: {} values cannot be planes of {h}x{w} resized to {out_h}x{out_w}",
                latents.len()
            )));
        }
        let rows = self.weights(h, out_h);
        let cols = self.weights(w, out_w);
        let mut out = Vec::with_capacity(latents.len() / (h * w) * out_h * out_w);
        let mut tmp = vec![0f32; h * out_w];
        for plane in latents.chunks_exact(h * w) {
            // Width first, then height, as torch's separable kernels do.
            for y in 0..h {
                for (x, taps) in cols.iter().enumerate() {
                    tmp[y * out_w + x] = taps.iter().map(|&(i, wt)| wt * plane[y * w + i]).sum();
                }
            }
            for taps in &rows {
                for x in 0..out_w {
                    out.push(taps.iter().map(|&(i, wt)| wt * tmp[i * out_w + x]).sum());
                }
            }
        }
        Ok(out)
    }

    /// For each output index, the input indices and weights along one axis.
    fn weights(self, input: usize, output: usize) -> Vec<Vec<(usize, f32)>> {
        let scale = input as f32 / output as f32;
        let last = input - 1;
        (0..output)
            .map(|o| match self {
                LatentUpscale::Nearest => {
                    vec![(((o as f32 * scale).floor() as usize).min(last), 1.0)]
                }
                LatentUpscale::NearestExact => {
                    vec![((((o as f32 + 0.5) * scale).floor() as usize).min(last), 1.0)]
                }
                LatentUpscale::Bilinear => {
                    let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                    let i0 = (src.floor() as usize).min(last);
                    let i1 = (i0 + 1).min(last);
                    let t = src - i0 as f32;
                    vec![(i0, 1.0 - t), (i1, t)]
                }
                LatentUpscale::Bicubic => {
                    let src = (o as f32 + 0.5) * scale - 0.5;
                    let i = src.floor();
                    let t = src - i;
                    (-1..=2)
                        .map(|k| {
                            let idx = (i as isize + k).clamp(0, last as isize) as usize;
                            (idx, cubic(t - k as f32, -0.75))
                        })
                        .collect()
                }
                LatentUpscale::BilinearAntialiased => {
                    antialiased(o, scale, input, 1.0, |x| (1.0 - x.abs()).max(0.0))
                }
                LatentUpscale::BicubicAntialiased => {
                    antialiased(o, scale, input, 2.0, |x| cubic(x, -0.5))
                }
            })
            .collect()
    }
}

/// Keys' cubic convolution kernel at distance `x` with parameter `a` (torch: -0.75 plain,
/// -0.5 antialiased, as PIL).
fn cubic(x: f32, a: f32) -> f32 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// torch's antialiased (PIL-style) taps: the filter widened by the downscale factor, centred on
/// the output pixel's centre, normalised to sum 1.
fn antialiased(
    o: usize,
    scale: f32,
    input: usize,
    radius: f32,
    filter: impl Fn(f32) -> f32,
) -> Vec<(usize, f32)> {
    let support = radius * scale.max(1.0);
    let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let center = scale * (o as f32 + 0.5);
    let lo = ((center - support + 0.5) as isize).max(0) as usize;
    let hi = ((center + support + 0.5) as isize).min(input as isize) as usize;
    let taps: Vec<(usize, f32)> = (lo..hi)
        .map(|j| (j, filter((j as f32 - center + 0.5) * inv)))
        .collect();
    let total: f32 = taps.iter().map(|t| t.1).sum();
    taps.into_iter()
        .map(|(j, wt)| (j, if total != 0.0 { wt / total } else { 0.0 }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in LatentUpscale::names() {
            assert_eq!(LatentUpscale::from_name(name).unwrap().name(), name);
        }
        assert_eq!(
            LatentUpscale::from_name("latent (Bicubic)"),
            Some(LatentUpscale::Bicubic)
        );
        assert_eq!(LatentUpscale::from_name("R-ESRGAN 4x+"), None);
    }

    #[test]
    fn every_mode_keeps_a_constant_plane_and_doubles_sizes() {
        for name in LatentUpscale::names() {
            let mode = LatentUpscale::from_name(name).unwrap();
            let out = mode.resize(&[3.0; 2 * 5 * 3], (5, 3), (10, 7)).unwrap();
            assert_eq!(out.len(), 2 * 10 * 7);
            assert!(out.iter().all(|v| (v - 3.0).abs() < 1e-5), "{name}");
        }
    }

    #[test]
    fn nearest_modes_pick_torchs_source_pixels() {
        let row = [0.0, 1.0, 2.0];
        // torch: nearest 3 -> 5 takes floor(o * 0.6) = 0,0,1,1,2; nearest-exact floor((o+.5)*.6)
        // = 0,0,1,2,2.
        let near = LatentUpscale::Nearest.resize(&row, (1, 3), (1, 5)).unwrap();
        assert_eq!(near, [0.0, 0.0, 1.0, 1.0, 2.0]);
        let exact = LatentUpscale::NearestExact
            .resize(&row, (1, 3), (1, 5))
            .unwrap();
        assert_eq!(exact, [0.0, 0.0, 1.0, 2.0, 2.0]);
    }
}
