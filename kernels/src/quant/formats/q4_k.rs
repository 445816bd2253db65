//! ggml q4_K: 256 weights in 8 sub-blocks of 32. f16 d, f16 dmin, scales[12] (a 6-bit scale and
//! min per sub-block, `get_scale_min_k4`), qs[128]: in 64-weight chunk p, byte `qs[32 p + l]` holds
//! weight l in its low nibble (sub-block 2p) and weight 32 + l in its high nibble (sub-block 2p + 1).
//! `x = (d * sc) * q - dmin * m` (`dequantize_row_q4_K`). 144 bytes.

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
