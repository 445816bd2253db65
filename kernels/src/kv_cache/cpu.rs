//! CPU KV cache write: the rows are converted straight into the cache's own vector.

use half::f16;

use kiln_runtime::{CpuData, Error, Result, Tensor};

/// Writes `rows` into `cache` from element `offset` on (shapes checked by the caller).
pub fn kv_write(cache: &mut Tensor, rows: &Tensor, offset: usize) -> Result<()> {
    let src = rows
        .cpu_data()
        .ok_or_else(|| Error::Device("kv_write: `rows` is not on the CPU".into()))?;
    let n = src.len();
    match (cache.cpu_data_mut("kv_write")?, src) {
        (CpuData::F32(dst), CpuData::F32(s)) => dst[offset..offset + n].copy_from_slice(s),
        (CpuData::F16(dst), CpuData::F16(s)) => dst[offset..offset + n].copy_from_slice(s),
        (CpuData::F32(dst), CpuData::F16(s)) => {
            for (d, s) in dst[offset..offset + n].iter_mut().zip(s) {
                *d = s.to_f32();
            }
        }
        (CpuData::F16(dst), CpuData::F32(s)) => {
            for (d, &s) in dst[offset..offset + n].iter_mut().zip(s) {
                *d = f16::from_f32(s);
            }
        }
        _ => return Err(Error::dtype("kv_write", "u32 cache or rows")),
    }
    Ok(())
}
