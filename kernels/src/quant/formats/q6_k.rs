//! ggml q6_K: 256 weights in 16 sub-blocks of 16. ql[128] (low nibbles), qh[64] (high 2 bits), i8
//! scales[16], f16 d. In 128-weight half n, weight `32 t + l` takes nibble `t / 2` of
//! `ql[64 n + 32 (t % 2) + l]` and bits `2t..2t+2` of `qh[32 n + l]`; `q` is that 6-bit value minus
//! 32 and the weight's sub-block is its index / 16. `x = (d * sc) * q` (`dequantize_row_q6_K`).
//! 210 bytes.

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
