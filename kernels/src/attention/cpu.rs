//! CPU attention in f32: for each (batch, head, block of query rows), scores = q kᵀ and out = p v as
//! two GEMMs (the `gemm` crate, addressing q, k, v and out in place through strides), with an exact
//! row softmax between them. Blocks run in parallel; the score block is per thread and bounded.

use gemm::Parallelism;
use rayon::prelude::*;

use kiln_runtime::{Error, Result, Tensor};

use super::Shape;
use crate::common::{cpu_f32, cpu_output, fast_exp as exp};

/// Query rows per block: enough for efficient GEMMs, and lk x 64 scores stay in L2 for SD's 4096 keys.
const QUERY_BLOCK: usize = 64;

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
    let mut out = vec![0.0f32; s.b * s.lq * s.hq * s.d];
    let blocks = s.lq.div_ceil(QUERY_BLOCK);
    let dst = SharedOut(out.as_mut_ptr());
    (0..s.b * s.hq * blocks).into_par_iter().for_each_init(
        || vec![0.0f32; QUERY_BLOCK.min(s.lq) * s.lk],
        |scores, item| {
            let block = item % blocks;
            let h = (item / blocks) % s.hq;
            let b = item / (blocks * s.hq);
            let rows = QUERY_BLOCK.min(s.lq - block * QUERY_BLOCK);
            let job = Block {
                b,
                h,
                first_row: block * QUERY_BLOCK,
                rows,
            };
            // SAFETY: `job` writes only out[b, first_row..first_row + rows, h, ..], and no other
            // block has the same (b, h, rows); `out` outlives the parallel loop.
            unsafe { job.run(s, &qv, &kv, &vv, mask, scale, causal, scores, &dst) };
        },
    );
    cpu_output(q.shape(), q.dtype(), out)
}

/// The output pointer, shared by blocks that write disjoint elements.
struct SharedOut(*mut f32);
// SAFETY: blocks write disjoint elements (see `Block::run`).
unsafe impl Sync for SharedOut {}

struct Block {
    b: usize,
    h: usize,
    first_row: usize,
    rows: usize,
}

impl Block {
    /// # Safety
    /// `out` must point at the [B, Lq, Hq, D] output, and no other thread may touch this block's rows
    /// of head `h` while it runs.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        &self,
        s: &Shape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        mask: Option<&[u32]>,
        scale: f32,
        causal: bool,
        scores: &mut [f32],
        out: &SharedOut,
    ) {
        let (d, lk) = (s.d, s.lk);
        let q_stride = s.hq * d;
        let kv_stride = s.hkv * d;
        let q0 = (self.b * s.lq + self.first_row) * q_stride + self.h * d;
        let kv0 = self.b * lk * kv_stride + (self.h / (s.hq / s.hkv)) * d;
        let scores = &mut scores[..self.rows * lk];
        // scores[rows, lk] = scale * q[rows, d] k[lk, d]ᵀ: k read through (column, row) strides.
        gemm::gemm(
            self.rows,
            lk,
            d,
            scores.as_mut_ptr(),
            1,
            lk as isize,
            false,
            q.as_ptr().add(q0),
            1,
            q_stride as isize,
            k.as_ptr().add(kv0),
            kv_stride as isize,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
        let mut sums = [0.0f32; QUERY_BLOCK];
        for (r, row) in scores.chunks_exact_mut(lk).enumerate() {
            let i = self.first_row + r;
            // Keys j with j + lq <= i + lk are visible under the causal mask.
            let visible = if causal {
                (i + lk + 1).saturating_sub(s.lq).min(lk)
            } else {
                lk
            };
            row[visible..].fill(f32::NEG_INFINITY);
            if let Some(m) = mask {
                let m = &m[self.b * lk..][..lk];
                for (x, &keep) in row.iter_mut().zip(m) {
                    if keep == 0 {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            sums[r] = softmax_numerator(row);
        }
        // out[rows, d] = p[rows, lk] v[lk, d], then each row divided by its sum.
        let o = out.0.add(q0);
        gemm::gemm(
            self.rows,
            d,
            lk,
            o,
            1,
            q_stride as isize,
            false,
            scores.as_ptr(),
            1,
            lk as isize,
            v.as_ptr().add(kv0),
            1,
            kv_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
        for (r, &sum) in sums[..self.rows].iter().enumerate() {
            let row = std::slice::from_raw_parts_mut(o.add(r * q_stride), d);
            // A row with no visible key has sum 0 and p = 0: it stays zero.
            let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

/// Replaces `row` by exp(row - max(row)) and returns its sum; a row of -inf becomes zeros (sum 0).
/// With AVX2 where the CPU has it (detected at run time; the portable build targets SSE2 only).
fn softmax_numerator(row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected on this CPU.
        return unsafe { softmax_numerator_avx2(row) };
    }
    softmax_numerator_body(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_numerator_avx2(row: &mut [f32]) -> f32 {
    softmax_numerator_body(row)
}

/// Eight independent lanes keep the max, exp and sum loops vectorised.
#[inline(always)]
fn softmax_numerator_body(row: &mut [f32]) -> f32 {
    const LANES: usize = 8;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return 0.0;
    }
    // Two simple loops (map, then a lane-wise sum) are what the vectoriser handles best.
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let mut sums = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (s, &x) in sums.iter_mut().zip(c) {
            *s += x;
        }
    }
    sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}
