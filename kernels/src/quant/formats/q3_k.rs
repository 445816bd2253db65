//! ggml q3_K: 256 weights in 16 sub-blocks of 16. hmask[32], qs[64], scales[12], f16 d. In 128-weight
//! half n, weight `32 j + l` has its low 2 bits at bits `2j..2j+2` of `qs[32 n + l]` and its third bit
//! at bit `4 n + j` of `hmask[l]` (a set bit means no offset, a clear one subtracts 4); its sub-block
//! is `8 n + 2 j + l / 16`, whose 6-bit scale keeps the low 4 bits in nibble `i / 8` of `scales[i % 8]`
//! and the top 2 in bits `2 (i / 4)` of `scales[8 + i % 4]`. `x = (d * (sc - 32)) * q`
//! (`dequantize_row_q3_K`). 110 bytes.

use super::{dot_unpacked, f16_at};

pub const BLOCK: usize = 256;
pub const BYTES: usize = 110;

/// The 16 signed sub-block scales (`sc - 32`), as ggml's `aux` shuffle gives them.
#[inline(always)]
pub fn scales(s: &[u8]) -> [i32; 16] {
    std::array::from_fn(|i| {
        let low = (s[i % 8] >> (4 * (i / 8))) & 0xF;
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        i32::from(low | (high << 4)) - 32
    })
}

pub fn unpack(b: &[u8], out: &mut [f32]) {
    let (hmask, qs) = (&b[..32], &b[32..96]);
    let sc = scales(&b[96..108]);
    let d = f16_at(b, 108);
    for (i, y) in out[..BLOCK].chunks_exact_mut(16).enumerate() {
        let (n, j, half) = (i / 8, (i % 8) / 2, i % 2);
        let dl = d * sc[i] as f32;
        let q = &qs[32 * n + 16 * half..][..16];
        let h = &hmask[16 * half..][..16];
        let bit = 1u8 << (4 * n + j);
        for ((y, &q), &h) in y.iter_mut().zip(q).zip(h) {
            let v = i32::from((q >> (2 * j)) & 3) - if h & bit != 0 { 0 } else { 4 };
            *y = dl * v as f32;
        }
    }
}

#[inline(always)]
pub fn dot(b: &[u8], x: &[f32]) -> f32 {
    dot_unpacked::<BLOCK>(b, x, unpack)
}
