//! ggml q4_1: f16 d, f16 m, 16 bytes of nibbles (byte j: weight j low, weight j + 16 high);
//! `x = q * d + m` (`dequantize_row_q4_1`). 20 bytes per 32 weights.

use super::{dot_unpacked, f16_at};

pub const BLOCK: usize = 32;
pub const BYTES: usize = 20;

pub fn unpack(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..BYTES].iter().enumerate() {
        out[j] = f32::from(q & 0xF) * d + m;
        out[j + 16] = f32::from(q >> 4) * d + m;
    }
}

#[inline(always)]
pub fn dot(b: &[u8], x: &[f32]) -> f32 {
    dot_unpacked::<BLOCK>(b, x, unpack)
}
