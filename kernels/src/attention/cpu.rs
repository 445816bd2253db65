//! CPU attention: exact softmax per query row in f32, one row of scores at a time, rows in parallel.

use rayon::prelude::*;

use kiln_runtime::{Error, Result, Tensor};

use super::Shape;
use crate::common::{cpu_f32, cpu_output};

pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    s: &Shape,
    scale: f32,
    causal: bool,
) -> Result<Tensor> {
    let (qv, kv, vv) = (cpu_f32(q)?, cpu_f32(k)?, cpu_f32(v)?);
    let mask = match mask {
        Some(m) => Some(
            m.cpu_data()
                .and_then(|d| match d {
                    kiln_runtime::CpuData::U32(x) => Some(x.as_slice()),
                    _ => None,
                })
                .ok_or_else(|| Error::dtype("attention", "key_padding_mask is not CPU u32"))?,
        ),
        None => None,
    };
    let (d, group) = (s.d, s.hq / s.hkv);
    let kv_stride = s.hkv * d;
    let mut out = vec![0.0f32; s.b * s.lq * s.hq * d];
    // Output rows are ordered (b, i, h), exactly the [B, Lq, Hq, D] layout.
    out.par_chunks_mut(d)
        .enumerate()
        .with_min_len(8)
        .for_each_init(
            || vec![0.0f32; s.lk],
            |scores, (row, o)| {
                let h = row % s.hq;
                let i = (row / s.hq) % s.lq;
                let b = row / (s.hq * s.lq);
                let qr = &qv[row * d..(row + 1) * d];
                let base = b * s.lk * kv_stride + (h / group) * d;
                // Keys j with j + lq <= i + lk under the causal mask.
                let visible = if causal {
                    (i + s.lk + 1).saturating_sub(s.lq).min(s.lk)
                } else {
                    s.lk
                };
                let mut max = f32::NEG_INFINITY;
                for (j, sc) in scores.iter_mut().enumerate() {
                    let seen = j < visible && mask.is_none_or(|m| m[b * s.lk + j] != 0);
                    *sc = if seen {
                        let kr = &kv[base + j * kv_stride..][..d];
                        qr.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * scale
                    } else {
                        f32::NEG_INFINITY
                    };
                    max = max.max(*sc);
                }
                if max == f32::NEG_INFINITY {
                    return; // no visible key: the row stays zero
                }
                let mut sum = 0.0f32;
                for (j, &sc) in scores.iter().enumerate() {
                    if sc == f32::NEG_INFINITY {
                        continue;
                    }
                    let w = (sc - max).exp();
                    sum += w;
                    let vr = &vv[base + j * kv_stride..][..d];
                    for (acc, &x) in o.iter_mut().zip(vr) {
                        *acc += w * x;
                    }
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|x| *x *= inv);
            },
        );
    cpu_output(q.shape(), q.dtype(), out)
}
