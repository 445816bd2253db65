//! The ggml block types kiln reads from GGUF files but does not pack: q4_1, q5_0, q5_1 (32-weight
//! blocks) and the 256-weight K-quants q2_K .. q6_K, one file each (the layouts are documented on
//! `QuantFormat`). Each has `unpack`, bit-identical to ggml's `dequantize_row_*` (the same f32
//! operations in the same order: Rust never fuses a multiply and an add), and `dot`, one block with
//! f32 activations: the block is unpacked onto the stack and dotted in eight lanes. q4_K, q6_K and
//! q5_0 also have `pack`, ggml's reference quantiser bit for bit (searches in `scale_search`), for
//! writing llama.cpp GGUF files.

pub mod q2_k;
pub mod q3_k;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod scale_search;

use half::f16;

#[inline(always)]
pub(super) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `sum(unpack(b) * x)` for an `N`-weight block, in eight lanes.
#[inline(always)]
pub(super) fn dot_unpacked<const N: usize>(
    b: &[u8],
    x: &[f32],
    unpack: impl Fn(&[u8], &mut [f32]),
) -> f32 {
    let mut w = [0.0f32; N];
    unpack(b, &mut w);
    let mut lanes = [0.0f32; 8];
    for (w, x) in w.chunks_exact(8).zip(x[..N].chunks_exact(8)) {
        for ((l, &w), &x) in lanes.iter_mut().zip(w).zip(x) {
            *l += w * x;
        }
    }
    lanes.iter().sum()
}

/// q4_K's and q5_K's 6-bit scale and min of sub-block `j` (0..8) from their 12 scale bytes: ggml's
/// `get_scale_min_k4`.
#[inline(always)]
pub(super) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}
