//! ggml q5_0: f16 d, u32 qh (bit j: the fifth bit of weight j), 16 bytes of low nibbles (byte j:
//! weight j low, weight j + 16 high); `x = ((nibble | bit << 4) - 16) * d` (`dequantize_row_q5_0`).
//! 22 bytes per 32 weights.

use super::{dot_unpacked, f16_at};

pub const BLOCK: usize = 32;
pub const BYTES: usize = 22;

pub fn unpack(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, &q) in b[6..BYTES].iter().enumerate() {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        out[j] = ((u32::from(q & 0xF) | h0) as i32 - 16) as f32 * d;
        out[j + 16] = ((u32::from(q >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

#[inline(always)]
pub fn dot(b: &[u8], x: &[f32]) -> f32 {
    dot_unpacked::<BLOCK>(b, x, unpack)
}
