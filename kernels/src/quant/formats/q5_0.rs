//! ggml q5_0: f16 d, u32 qh (bit j: the fifth bit of weight j), 16 bytes of low nibbles (byte j:
//! weight j low, weight j + 16 high); `x = ((nibble | bit << 4) - 16) * d` (`dequantize_row_q5_0`).
//! 22 bytes per 32 weights.
//!
//! `pack` is ggml's `quantize_row_q5_0_ref` bit for bit: llama-quantize's q5_0, and Q4_K_M's type
//! for a q4_K tensor whose rows are not whole 256-weight blocks.

use half::f16;

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

/// Packs 32 weights into one block (`out`: 22 bytes), as ggml's `quantize_row_q5_0_ref`.
pub fn pack(x: &[f32], out: &mut [u8]) {
    let x = &x[..BLOCK];
    // The signed value of largest magnitude maps to code 0 (-16 d) exactly.
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    // `(int8_t)(x * id + 16.5f)` truncates toward zero, then `MIN(31, ..)`.
    let code = |v: f32| ((v * id + 16.5) as i8).min(31) as u8;
    let mut qh = 0u32;
    for j in 0..16 {
        let (a, b) = (code(x[j]), code(x[j + 16]));
        out[6 + j] = (a & 0xF) | ((b & 0xF) << 4);
        qh |= u32::from(a >> 4) << j;
        qh |= u32::from(b >> 4) << (j + 16);
    }
    out[2..6].copy_from_slice(&qh.to_le_bytes());
}
