//! CPU nearest upsampling: each output row repeats one input row's values `factor` times each; rows
//! are filled in parallel. Values are copied in their storage dtype (no rounding involved).

use rayon::prelude::*;

use kiln_runtime::{CpuData, Error, Result, Tensor};

pub fn upsample_nearest2d(x: &Tensor, factor: usize, shape: &[usize; 4]) -> Result<Tensor> {
    let data = match x.cpu_data() {
        Some(CpuData::F32(v)) => CpuData::F32(repeat(v, x.shape(), factor)),
        Some(CpuData::F16(v)) => CpuData::F16(repeat(v, x.shape(), factor)),
        Some(CpuData::U32(_)) => return Err(Error::dtype("upsample_nearest2d", "u32")),
        None => {
            return Err(Error::Device(
                "upsample_nearest2d: cpu op given a GPU tensor".into(),
            ))
        }
    };
    Tensor::from_cpu_data(data, shape)
}

fn repeat<T: Copy + Send + Sync + Default>(x: &[T], shape: &[usize], f: usize) -> Vec<T> {
    let (h, w) = (shape[2], shape[3]);
    let (ho, wo) = (h * f, w * f);
    let mut out = vec![T::default(); x.len() * f * f];
    out.par_chunks_mut(wo)
        .with_min_len(64)
        .enumerate()
        .for_each(|(r, row)| {
            let (plane, oh) = (r / ho, r % ho);
            let src = &x[(plane * h + oh / f) * w..][..w];
            for (chunk, &v) in row.chunks_mut(f).zip(src) {
                chunk.fill(v);
            }
        });
    out
}
