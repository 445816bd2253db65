//! CPU attention over a KV cache: per (query row, head) the visible keys' scores, an exact softmax
//! (f64 sum) and the weighted sum of values, in f32. Rows run in parallel. Only the first kv_len rows
//! of the caches are read (and, for an f16 cache, converted).

use std::borrow::Cow;

use rayon::prelude::*;

use kiln_runtime::{CpuData, Error, Result, Tensor};

use super::cached::CachedShape;
use crate::common::{cpu_f32, cpu_output};

/// The first `n` values of a CPU float tensor as f32 (borrowed when already f32).
fn prefix_f32(t: &Tensor, n: usize) -> Result<Cow<'_, [f32]>> {
    match t.cpu_data() {
        Some(CpuData::F32(v)) => Ok(Cow::Borrowed(&v[..n])),
        Some(CpuData::F16(v)) => Ok(Cow::Owned(v[..n].iter().map(|h| h.to_f32()).collect())),
        _ => Err(Error::dtype(
            "cached_attention",
            "a cache that is not CPU f32/f16",
        )),
    }
}

pub(crate) fn cached_attention(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    s: &CachedShape,
    scale: f32,
    window: usize,
) -> Result<Tensor> {
    let qv = cpu_f32(q)?;
    let used = s.kv_len * s.hkv * s.d;
    let (kv, vv) = (prefix_f32(k_cache, used)?, prefix_f32(v_cache, used)?);
    let (d, group, kv_stride) = (s.d, s.hq / s.hkv, s.hkv * s.d);
    let mut out = vec![0.0f32; s.l * s.hq * d];
    out.par_chunks_mut(d)
        .zip(qv.par_chunks(d))
        .enumerate()
        .for_each_init(Vec::new, |scores, (row, (o, qr))| {
            let (i, h) = (row / s.hq, row % s.hq);
            let pos = s.kv_len - s.l + i;
            // Visible keys: lo..=pos.
            let lo = if window > 0 {
                (pos + 1).saturating_sub(window)
            } else {
                0
            };
            let hk = h / group;
            let key = |j: usize| (j * kv_stride + hk * d)..(j * kv_stride + hk * d + d);
            scores.clear();
            scores.extend((lo..=pos).map(|j| {
                let dot: f32 = qr.iter().zip(&kv[key(j)]).map(|(a, b)| a * b).sum();
                dot * scale
            }));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f64;
            for (w, j) in scores.iter_mut().zip(lo..=pos) {
                *w = (*w - max).exp();
                sum += *w as f64;
                for (o, &x) in o.iter_mut().zip(&vv[key(j)]) {
                    *o += *w * x;
                }
            }
            let inv = (1.0 / sum) as f32;
            o.iter_mut().for_each(|x| *x *= inv);
        });
    cpu_output(q.shape(), q.dtype(), out)
}
