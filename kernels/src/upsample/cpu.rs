//! CPU nearest upsampling: each output row copies one input row through a precomputed column map;
//! rows are filled in parallel. Values are copied in their storage dtype (no rounding involved).

use rayon::prelude::*;

use kiln_runtime::{CpuData, Error, Result, Tensor};

use super::Axis;

pub fn upsample_nearest2d(
    x: &Tensor,
    rows: Axis,
    cols: Axis,
    shape: &[usize; 4],
) -> Result<Tensor> {
    let data = match x.cpu_data() {
        Some(CpuData::F32(v)) => CpuData::F32(gather(v, rows, cols)),
        Some(CpuData::F16(v)) => CpuData::F16(gather(v, rows, cols)),
        Some(CpuData::U32(_)) => return Err(Error::dtype("upsample_nearest2d", "u32")),
        None => {
            return Err(Error::Device(
                "upsample_nearest2d: cpu op given a GPU tensor".into(),
            ))
        }
    };
    Tensor::from_cpu_data(data, shape)
}

fn gather<T: Copy + Send + Sync + Default>(x: &[T], rows: Axis, cols: Axis) -> Vec<T> {
    let (h, w) = (rows.input, cols.input);
    let (ho, wo) = (rows.output, cols.output);
    let planes = x.len() / (h * w);
    let column: Vec<usize> = (0..wo).map(|o| cols.source(o)).collect();
    let mut out = vec![T::default(); planes * ho * wo];
    out.par_chunks_mut(wo)
        .with_min_len(64)
        .enumerate()
        .for_each(|(r, row)| {
            let (plane, oh) = (r / ho, r % ho);
            let src = &x[(plane * h + rows.source(oh)) * w..][..w];
            for (v, &c) in row.iter_mut().zip(&column) {
                *v = src[c];
            }
        });
    out
}
