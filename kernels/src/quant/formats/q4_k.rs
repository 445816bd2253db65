//! ggml q4_K: 256 weights in 8 sub-blocks of 32. f16 d, f16 dmin, scales[12] (a 6-bit scale and
//! min per sub-block, `get_scale_min_k4`), qs[128]: in 64-weight chunk p, byte `qs[32 p + l]` holds
//! weight l in its low nibble (sub-block 2p) and weight 32 + l in its high nibble (sub-block 2p + 1).
//! `x = (d * sc) * q - dmin * m` (`dequantize_row_q4_K`). 144 bytes.
//!
//! `pack` is ggml's `quantize_row_q4_K_ref` (what llama-quantize runs without an importance matrix),
//! bit for bit.

use half::f16;

use super::scale_search::{make_qkx2_quants, nearest_int};
use super::{dot_unpacked, f16_at, scale_min_k4};

pub const BLOCK: usize = 256;
pub const BYTES: usize = 144;

pub fn unpack(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..BYTES]);
    for (c, y) in out[..BLOCK].chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(c, scales);
        let d1 = d * f32::from(sc);
        let m1 = dmin * f32::from(m);
        let shift = 4 * (c % 2);
        for (y, &q) in y.iter_mut().zip(&qs[32 * (c / 2)..][..32]) {
            *y = d1 * f32::from((q >> shift) & 0xF) - m1;
        }
    }
}

#[inline(always)]
pub fn dot(b: &[u8], x: &[f32]) -> f32 {
    dot_unpacked::<BLOCK>(b, x, unpack)
}

/// Packs 256 weights into one block (`out`: 144 bytes), as ggml's `quantize_row_q4_K_ref`.
pub fn pack(x: &[f32], out: &mut [u8]) {
    let x = &x[..BLOCK];
    let mut l = [0u8; BLOCK];
    let mut laux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..][..32];
        // Weights: the sub-block's RMS plus each weight's magnitude.
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = make_qkx2_quants(
            15,
            xs,
            &weights,
            &mut l[32 * j..][..32],
            &mut laux,
            -1.0,
            0.1,
            20,
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let packed = &mut out[4..16];
    packed.fill(0);
    for j in 0..8 {
        // C stores nearest_int into a uint8_t (wrapping) before MIN(63, ..).
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    out[0..2].copy_from_slice(&d.to_le_bytes());
    out[2..4].copy_from_slice(&dmin.to_le_bytes());
    // Codes again against the rounded scales; a sub-block whose scale rounds to zero keeps the
    // search's codes.
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &out[4..16]);
        let d = d.to_f32() * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * f32::from(m);
        for (q, &v) in l[32 * j..][..32].iter_mut().zip(&x[32 * j..][..32]) {
            *q = nearest_int((v + dm) / d).clamp(0, 15) as u8;
        }
    }
    for (p, chunk) in l.chunks_exact(64).enumerate() {
        for i in 0..32 {
            out[16 + 32 * p + i] = chunk[i] | (chunk[i + 32] << 4);
        }
    }
}
