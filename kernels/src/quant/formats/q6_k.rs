//! ggml q6_K: 256 weights in 16 sub-blocks of 16. ql[128] (low nibbles), qh[64] (high 2 bits), i8
//! scales[16], f16 d. In 128-weight half n, weight `32 t + l` takes nibble `t / 2` of
//! `ql[64 n + 32 (t % 2) + l]` and bits `2t..2t+2` of `qh[32 n + l]`; `q` is that 6-bit value minus
//! 32 and the weight's sub-block is its index / 16. `x = (d * sc) * q` (`dequantize_row_q6_K`).
//! 210 bytes.
//!
//! `pack` is ggml's `quantize_row_q6_K_ref` (what llama-quantize runs without an importance matrix),
//! bit for bit.

use half::f16;

use super::scale_search::{make_qx_quants_rmse1, nearest_int, GROUP_MAX_EPS};
use super::{dot_unpacked, f16_at};

pub const BLOCK: usize = 256;
pub const BYTES: usize = 210;

pub fn unpack(b: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (c, y) in out[..BLOCK].chunks_exact_mut(32).enumerate() {
        // 32-weight chunk c: half n, position t in the half.
        let (n, t) = (c / 4, c % 4);
        let low = &ql[64 * n + 32 * (t % 2)..][..32];
        let high = &qh[32 * n..][..32];
        for (l, y) in y.iter_mut().enumerate() {
            let q = ((low[l] >> (4 * (t / 2))) & 0xF) | (((high[l] >> (2 * t)) & 3) << 4);
            let sc = scales[2 * c + l / 16] as i8;
            *y = d * f32::from(sc) * f32::from(q as i8 - 32);
        }
    }
}

#[inline(always)]
pub fn dot(b: &[u8], x: &[f32]) -> f32 {
    dot_unpacked::<BLOCK>(b, x, unpack)
}

/// Packs 256 weights into one block (`out`: 210 bytes), as ggml's `quantize_row_q6_K_ref`.
pub fn pack(x: &[f32], out: &mut [u8]) {
    let x = &x[..BLOCK];
    let mut l = [0i8; BLOCK];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for (ib, scale) in scales.iter_mut().enumerate() {
        *scale = make_qx_quants_rmse1(32, &x[16 * ib..][..16], &mut l[16 * ib..][..16]);
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = *scale;
        }
    }
    out[..BYTES].fill(0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = f16::from_f32(1.0 / iscale);
    out[208..210].copy_from_slice(&d.to_le_bytes());
    for (ib, &scale) in scales.iter().enumerate() {
        // C stores MIN(127, ..) into an int8_t.
        out[192 + ib] = nearest_int(iscale * scale).min(127) as i8 as u8;
    }
    // Codes again against the rounded scales; a sub-block whose scale rounds to zero keeps the
    // search's codes.
    for j in 0..16 {
        let dj = d.to_f32() * f32::from(out[192 + j] as i8);
        if dj == 0.0 {
            continue;
        }
        for (q, &v) in l[16 * j..][..16].iter_mut().zip(&x[16 * j..][..16]) {
            *q = (nearest_int(v / dj).clamp(-32, 31) + 32) as i8;
        }
    }
    let (ql, rest) = out.split_at_mut(128);
    let qh = &mut rest[..64];
    for n in 0..2 {
        let l = &l[128 * n..][..128];
        for i in 0..32 {
            let q = |k: usize| l[i + 32 * k] as u8;
            ql[64 * n + i] = (q(0) & 0xF) | ((q(2) & 0xF) << 4);
            ql[64 * n + 32 + i] = (q(1) & 0xF) | ((q(3) & 0xF) << 4);
            qh[32 * n + i] =
                (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
}
