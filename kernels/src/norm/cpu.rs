//! CPU normalisation: rayon over rows, two-pass statistics accumulated in f64.

use rayon::prelude::*;

use kiln_runtime::{Result, Tensor};

use super::{Rows, Stats};
use crate::common::{cpu_f32, cpu_output, fast_exp, lane_sum};

/// (mean, 1 / std) of one row; the mean is 0 for RMSNorm.
pub fn row_stats(row: &[f32], stats: Stats, eps: f32) -> (f64, f64) {
    let n = row.len() as f64;
    let (mean, spread) = match stats {
        Stats::MeanVar => {
            let mean = lane_sum(row, |v| v) / n;
            (mean, lane_sum(row, |v| (v - mean) * (v - mean)))
        }
        Stats::Rms => (0.0, lane_sum(row, |v| v * v)),
    };
    (mean, 1.0 / (spread / n + eps as f64).sqrt())
}

pub fn norm(rows: &Rows) -> Result<Tensor> {
    let x = cpu_f32(rows.x)?;
    let weight = rows.weight.map(cpu_f32).transpose()?;
    let bias = rows.bias.map(cpu_f32).transpose()?;
    let (weight, bias) = (weight.as_deref(), bias.as_deref());
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(rows.width)
        .zip(x.par_chunks(rows.width))
        .enumerate()
        .with_min_len((4096 / rows.width).max(1))
        .for_each(|(r, (out, row))| {
            let (mean, rstd) = row_stats(row, rows.stats, rows.eps);
            let first = (r % rows.groups) * rows.cpg;
            // Per channel, y = (x - mean) * scale + shift in f64 (x may sit far from zero, where an f32
            // shift would cancel), in plain loops with no per-element division.
            let affine = |c: usize| {
                let scale = rstd * weight.map_or(1.0, |w| w[c] as f64);
                (scale, bias.map_or(0.0, |b| b[c] as f64))
            };
            if rows.spatial == 1 {
                for (i, (o, &v)) in out.iter_mut().zip(row).enumerate() {
                    let (scale, shift) = affine(first + i);
                    *o = ((v as f64 - mean) * scale + shift) as f32;
                }
            } else {
                for (k, (o, seg)) in out
                    .chunks_mut(rows.spatial)
                    .zip(row.chunks(rows.spatial))
                    .enumerate()
                {
                    let (scale, shift) = affine(first + k);
                    for (o, &v) in o.iter_mut().zip(seg) {
                        *o = ((v as f64 - mean) * scale + shift) as f32;
                    }
                }
            }
            if rows.silu {
                for o in out.iter_mut() {
                    *o /= 1.0 + fast_exp(-*o);
                }
            }
        });
    cpu_output(rows.x.shape(), rows.x.dtype(), out)
}

/// `x + residual` (same shapes) in f32, rounded to their dtype, as `elementwise::add` computes it.
pub fn add(x: &Tensor, residual: &Tensor) -> Result<Tensor> {
    let (a, b) = (cpu_f32(x)?, cpu_f32(residual)?);
    let sum: Vec<f32> = a.par_iter().zip(b.par_iter()).map(|(a, b)| a + b).collect();
    cpu_output(x.shape(), x.dtype(), sum)
}
