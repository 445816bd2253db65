//! ggml q5_K: q4_K plus a fifth bit per weight. f16 d, f16 dmin, scales[12] (as q4_K), qh[32]
//! (bit c of `qh[l]`: the fifth bit of weight `32 c + l`), qs[128] (low nibbles, as q4_K).
//! `x = (d * sc) * (q + 16 bit) - dmin * m` (`dequantize_row_q5_K`). 176 bytes.

use super::{dot_unpacked, f16_at, scale_min_k4};

pub const BLOCK: usize = 256;
pub const BYTES: usize = 176;

pub fn unpack(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..BYTES]);
    for (c, y) in out[..BLOCK].chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(c, scales);
        let d1 = d * f32::from(sc);
        let m1 = dmin * f32::from(m);
        let shift = 4 * (c % 2);
        for ((y, &q), &h) in y.iter_mut().zip(&qs[32 * (c / 2)..][..32]).zip(qh) {
            let v = ((q >> shift) & 0xF) + if h & (1 << c) != 0 { 16 } else { 0 };
            *y = d1 * f32::from(v) - m1;
        }
    }
}

#[inline(always)]
pub fn dot(b: &[u8], x: &[f32]) -> f32 {
    dot_unpacked::<BLOCK>(b, x, unpack)
}
