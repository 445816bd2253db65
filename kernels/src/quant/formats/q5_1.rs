//! ggml q5_1: f16 d, f16 m, u32 qh (bit j: the fifth bit of weight j), 16 bytes of low nibbles as
//! q5_0; `x = (nibble | bit << 4) * d + m` (`dequantize_row_q5_1`). 24 bytes per 32 weights.

use super::{dot_unpacked, f16_at};

pub const BLOCK: usize = 32;
pub const BYTES: usize = 24;

pub fn unpack(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, &q) in b[8..BYTES].iter().enumerate() {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        out[j] = (u32::from(q & 0xF) | h0) as f32 * d + m;
        out[j + 16] = (u32::from(q >> 4) | h1) as f32 * d + m;
    }
}

#[inline(always)]
pub fn dot(b: &[u8], x: &[f32]) -> f32 {
    dot_unpacked::<BLOCK>(b, x, unpack)
}
