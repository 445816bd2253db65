//! ggml q2_K: 256 weights in 16 sub-blocks of 16. scales[16] (low nibble: the sub-block's scale,
//! high nibble: its min), qs[64] of 2-bit codes, f16 d, f16 dmin. In 128-weight half n, weight
//! `32 j + l` is bits `2j..2j+2` of `qs[32 n + l]`, in sub-block `8 n + 2 j + l / 16`;
//! `x = (d * sc) * q - dmin * m` (`dequantize_row_q2_K`). 84 bytes.

use super::{dot_unpacked, f16_at};

pub const BLOCK: usize = 256;
pub const BYTES: usize = 84;

pub fn unpack(b: &[u8], out: &mut [f32]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (i, y) in out[..BLOCK].chunks_exact_mut(16).enumerate() {
        // Sub-block i: half n, shift j, bytes 16 (i % 2) .. of the half's 32.
        let (n, j, half) = (i / 8, (i % 8) / 2, i % 2);
        let sc = scales[i];
        let dl = d * f32::from(sc & 0xF);
        let ml = dmin * f32::from(sc >> 4);
        let q = &qs[32 * n + 16 * half..][..16];
        for (y, &q) in y.iter_mut().zip(q) {
            *y = dl * f32::from((q >> (2 * j)) & 3) - ml;
        }
    }
}

#[inline(always)]
pub fn dot(b: &[u8], x: &[f32]) -> f32 {
    dot_unpacked::<BLOCK>(b, x, unpack)
}
