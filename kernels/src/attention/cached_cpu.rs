//! CPU attention over a KV cache: per (query row, head) the visible keys' scores, an exact softmax
//! (f64 sum) and the weighted sum of values, in f32. (Query row, kv head) pairs run in parallel. Only the visible rows of
//! the caches are read; an f16 cache is converted one key or value row at a time as it is used
//! (converting the whole prefix each call made decode at a 16k depth convert 1G values per token).

use std::ops::Range;

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use kiln_runtime::{CpuData, Error, Result, Tensor};

use super::cached::CachedShape;
use crate::common::{cpu_f32, cpu_output};

/// A CPU cache's values, read a row at a time as f32.
enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl<'a> Rows<'a> {
    fn of(t: &'a Tensor) -> Result<Rows<'a>> {
        match t.cpu_data() {
            Some(CpuData::F32(v)) => Ok(Rows::F32(v)),
            Some(CpuData::F16(v)) => Ok(Rows::F16(v)),
            _ => Err(Error::dtype(
                "cached_attention",
                "a cache that is not CPU f32/f16",
            )),
        }
    }

    /// Values `range` as f32: borrowed, or converted into `buf`.
    fn get<'b>(&'b self, range: Range<usize>, buf: &'b mut [f32]) -> &'b [f32] {
        match self {
            Rows::F32(v) => &v[range],
            Rows::F16(v) => {
                let buf = &mut buf[..range.len()];
                v[range].convert_to_f32_slice(buf);
                buf
            }
        }
    }
}

fn to_f32_parallel(v: &[f16]) -> Vec<f32> {
    let mut out = vec![0.0f32; v.len()];
    out.par_chunks_mut(1 << 16)
        .zip(v.par_chunks(1 << 16))
        .for_each(|(o, v)| v.convert_to_f32_slice(o));
    out
}

/// Eight partial sums, so the loop vectorises (one running f32 sum would have to stay in order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
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
    for (name, t) in [("k_cache", k_cache), ("v_cache", v_cache)] {
        if t.numel() < used {
            return Err(Error::shape(
                "cached_attention",
                format!(
                    "`{name}` {:?} holds fewer than {} positions",
                    t.shape(),
                    s.kv_len
                ),
            ));
        }
    }
    // A long block of queries reads every key row many times: an f16 prefix is then converted
    // once, in parallel, instead of at every use.
    let (k32, v32);
    let (kv, vv) = match (Rows::of(k_cache)?, Rows::of(v_cache)?) {
        (Rows::F16(k), Rows::F16(v)) if s.l > super::cached::MAX_DECODE_ROWS => {
            k32 = to_f32_parallel(&k[..used]);
            v32 = to_f32_parallel(&v[..used]);
            (Rows::F32(&k32), Rows::F32(&v32))
        }
        rows => rows,
    };
    let (d, group, kv_stride) = (s.d, s.hq / s.hkv, s.hkv * s.d);
    let mut out = vec![0.0f32; s.l * s.hq * d];
    // One task per (query row, kv head): the group's query heads share each key and value row as
    // it is read (and converted), as the GPU decode kernel shares its K/V loads.
    out.par_chunks_mut(group * d)
        .zip(qv.par_chunks(group * d))
        .enumerate()
        .for_each_init(
            || (Vec::new(), vec![0.0f32; d], vec![0.0f64; group]),
            |(scores, buf, sums), (task, (o, qs))| {
                let (i, hk) = (task / s.hkv, task % s.hkv);
                let pos = s.kv_len - s.l + i;
                // Visible keys: lo..=pos.
                let lo = if window > 0 {
                    (pos + 1).saturating_sub(window)
                } else {
                    0
                };
                let n = pos + 1 - lo;
                let key = |j: usize| (j * kv_stride + hk * d)..(j * kv_stride + hk * d + d);
                scores.clear();
                scores.resize(group * n, 0.0);
                for j in lo..=pos {
                    let k = kv.get(key(j), buf);
                    for (g, q) in qs.chunks_exact(d).enumerate() {
                        scores[g * n + j - lo] = dot(q, k) * scale;
                    }
                }
                sums.fill(0.0);
                for (row, sum) in scores.chunks_exact_mut(n).zip(sums.iter_mut()) {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    for w in row.iter_mut() {
                        *w = (*w - max).exp();
                        *sum += *w as f64;
                    }
                }
                for j in lo..=pos {
                    let v = vv.get(key(j), buf);
                    for (g, o) in o.chunks_exact_mut(d).enumerate() {
                        let w = scores[g * n + j - lo];
                        for (o, &x) in o.iter_mut().zip(v) {
                            *o += w * x;
                        }
                    }
                }
                for (o, &sum) in o.chunks_exact_mut(d).zip(sums.iter()) {
                    let inv = (1.0 / sum) as f32;
                    o.iter_mut().for_each(|x| *x *= inv);
                }
            },
        );
    cpu_output(q.shape(), q.dtype(), out)
}
