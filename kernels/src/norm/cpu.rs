//! CPU normalisation: rayon over rows, two-pass statistics accumulated in f64.

use rayon::prelude::*;

use kiln_runtime::{Result, Tensor};

use super::{Rows, Stats};
use crate::common::{cpu_f32, cpu_output};

/// (mean, 1 / std) of one row; the mean is 0 for RMSNorm.
pub fn row_stats(row: &[f32], stats: Stats, eps: f32) -> (f64, f64) {
    let n = row.len() as f64;
    let (mean, spread) = match stats {
        Stats::MeanVar => {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
            let q: f64 = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
            (mean, q)
        }
        Stats::Rms => (0.0, row.iter().map(|&v| (v as f64).powi(2)).sum()),
    };
    (mean, 1.0 / (spread / n + eps as f64).sqrt())
}

pub fn norm(rows: &Rows) -> Result<Tensor> {
    let x = cpu_f32(rows.x)?;
    let weight = rows.weight.map(cpu_f32).transpose()?;
    let bias = rows.bias.map(cpu_f32).transpose()?;
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(rows.width)
        .zip(x.par_chunks(rows.width))
        .enumerate()
        .with_min_len((4096 / rows.width).max(1))
        .for_each(|(r, (out, row))| {
            let (mean, rstd) = row_stats(row, rows.stats, rows.eps);
            let first = (r % rows.groups) * rows.cpg;
            for (i, (o, &v)) in out.iter_mut().zip(row).enumerate() {
                let c = first + i / rows.spatial;
                let mut y = ((v as f64 - mean) * rstd) as f32;
                if let Some(w) = &weight {
                    y *= w[c];
                }
                if let Some(b) = &bias {
                    y += b[c];
                }
                if rows.silu {
                    y /= 1.0 + (-y).exp();
                }
                *o = y;
            }
        });
    cpu_output(rows.x.shape(), rows.x.dtype(), out)
}
