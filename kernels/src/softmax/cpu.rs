//! CPU softmax: rayon over rows, the exponential sum accumulated in f64 lanes.

use rayon::prelude::*;

use kiln_runtime::{Result, Tensor};

use crate::common::{cpu_f32, cpu_output, fast_exp, lane_sum};

/// Softmax of `scale * row` into `out`.
pub fn softmax_row(row: &[f32], scale: f32, out: &mut [f32]) {
    let max = row
        .iter()
        .map(|&v| scale * v)
        .fold(f32::NEG_INFINITY, f32::max);
    // Map first, then sum in eight f64 lanes: both loops vectorise.
    for (o, &v) in out.iter_mut().zip(row) {
        *o = fast_exp(scale * v - max);
    }
    let sum = lane_sum(out, |v| v);
    let inv = (1.0 / sum) as f32;
    out.iter_mut().for_each(|o| *o *= inv);
}

pub fn softmax(x: &Tensor, scale: f32, width: usize) -> Result<Tensor> {
    let values = cpu_f32(x)?;
    let mut out = vec![0.0f32; values.len()];
    out.par_chunks_mut(width)
        .zip(values.par_chunks(width))
        .with_min_len((4096 / width).max(1))
        .for_each(|(out, row)| softmax_row(row, scale, out));
    cpu_output(x.shape(), x.dtype(), out)
}
