//! CPU RoPE: cos/sin per (token, pair) are tabulated once (or given by the caller), then every head's
//! rows are rotated.

use rayon::prelude::*;

use kiln_runtime::{Result, Tensor};

use super::RopeStyle;
use crate::common::{cpu_f32, cpu_output};

/// `theta^(-2j/dim)` rounded to f32, as Hugging Face's `inv_freq` (computed in f64 here, so exact).
pub fn inv_freq(theta: f32, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|j| (theta as f64).powf(-2.0 * j as f64 / dim as f64) as f32)
        .collect()
}

pub fn rope(x: &Tensor, position_offset: usize, theta: f32, style: RopeStyle) -> Result<Tensor> {
    rotate(x, theta, style, |l| (position_offset + l) as f32)
}

/// RoPE with token `l` at `positions[l]` (shared by every batch entry).
pub fn rope_at(x: &Tensor, positions: &[u32], theta: f32, style: RopeStyle) -> Result<Tensor> {
    rotate(x, theta, style, |l| positions[l] as f32)
}

/// RoPE with the caller's `[L, D/2]` table of cosines and sines (shared by every batch entry).
pub fn rope_table(x: &Tensor, cos: &[f32], sin: &[f32], style: RopeStyle) -> Result<Tensor> {
    let table: Vec<(f32, f32)> = cos.iter().copied().zip(sin.iter().copied()).collect();
    apply(x, &table, style)
}

/// Rotates `x` (`[.., L, H, D]`) with token `l` at position `position(l)`, already an f32.
fn rotate(
    x: &Tensor,
    theta: f32,
    style: RopeStyle,
    position: impl Fn(usize) -> f32 + Sync,
) -> Result<Tensor> {
    let [seq_len, _, dim] = x.shape()[x.rank() - 3..].try_into().expect("rank checked");
    let freqs = inv_freq(theta, dim);
    // [L, half] of (cos, sin); the angle is an f32 product, as in the reference implementations.
    let table: Vec<(f32, f32)> = (0..seq_len)
        .into_par_iter()
        .flat_map_iter(|l| {
            let pos = position(l);
            freqs.iter().map(move |&f| {
                let (s, c) = (pos * f).sin_cos();
                (c, s)
            })
        })
        .collect();
    apply(x, &table, style)
}

/// Rotates every head's pairs of token `l` by the `(cos, sin)` of `table[l * D/2 + pair]`.
fn apply(x: &Tensor, table: &[(f32, f32)], style: RopeStyle) -> Result<Tensor> {
    let values = cpu_f32(x)?;
    let [seq_len, heads, dim] = x.shape()[x.rank() - 3..].try_into().expect("rank checked");
    let half = dim / 2;
    let mut out = vec![0.0f32; values.len()];
    out.par_chunks_mut(dim)
        .with_min_len(4096usize.div_ceil(dim))
        .zip(values.par_chunks(dim))
        .enumerate()
        .for_each(|(row, (o, v))| {
            let l = (row / heads) % seq_len;
            let cs = &table[l * half..(l + 1) * half];
            for (j, &(c, s)) in cs.iter().enumerate() {
                let (i0, i1) = match style {
                    RopeStyle::HalfSplit => (j, j + half),
                    RopeStyle::Interleaved => (2 * j, 2 * j + 1),
                };
                let (a, b) = (v[i0], v[i1]);
                o[i0] = a * c - b * s;
                o[i1] = b * c + a * s;
            }
        });
    cpu_output(x.shape(), x.dtype(), out)
}
