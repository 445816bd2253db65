//! CPU argmax: the host sampler's scan, row by row (rayon over rows).

use rayon::prelude::*;

use kiln_runtime::{CpuData, Result, Tensor};

use super::NON_FINITE;
use crate::common::cpu_f32;

/// Lowest index among the largest values by a strict `>` scan from index 0, exactly as the
/// sampler's greedy choice; that scan is also what fixes the NaN rules `argmax` documents.
pub fn argmax_row(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

pub fn argmax(x: &Tensor, width: usize, shape: &[usize], check_finite: bool) -> Result<Tensor> {
    let values = cpu_f32(x)?;
    let ids = values
        .par_chunks(width)
        .with_min_len((4096 / width).max(1))
        .map(|row| {
            if check_finite && row.iter().any(|v| !v.is_finite()) {
                NON_FINITE
            } else {
                argmax_row(row)
            }
        })
        .collect();
    Tensor::from_cpu_data(CpuData::U32(ids), shape)
}
