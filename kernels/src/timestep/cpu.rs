//! CPU timestep embedding, in f32 in the reference's order of operations.

use rayon::prelude::*;

use kiln_runtime::{Result, Tensor};

use super::TimestepEmbedding;
use crate::common::{cpu_f32, cpu_output};

pub fn timestep_embedding(
    t: &Tensor,
    cfg: &TimestepEmbedding,
    neg_log_period: f32,
    denom: f32,
) -> Result<Tensor> {
    let times = cpu_f32(t)?;
    let (dim, half) = (cfg.dim, cfg.dim / 2);
    let freqs: Vec<f32> = (0..half)
        .map(|j| (neg_log_period * j as f32 / denom).exp())
        .collect();
    let mut out = vec![0.0f32; times.len() * dim];
    out.par_chunks_mut(dim)
        .with_min_len(4096usize.div_ceil(dim))
        .zip(times.par_iter())
        .for_each(|(row, &time)| {
            let (first, second) = row[..2 * half].split_at_mut(half);
            for ((f, s), &freq) in first.iter_mut().zip(second).zip(&freqs) {
                let (sin, cos) = (cfg.scale * (time * freq)).sin_cos();
                (*f, *s) = if cfg.flip_sin_to_cos {
                    (cos, sin)
                } else {
                    (sin, cos)
                };
            }
        });
    cpu_output(&[times.len(), dim], t.dtype(), out)
}
