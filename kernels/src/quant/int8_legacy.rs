//! Integer dot products of q4_1 / q5_0 / q5_1 weight rows (llama.cpp's fallbacks for tensors whose
//! rows are not whole 256-weight K-quant blocks) with activations rounded to 8 bits per 32 values
//! (`int8::Q8Rows`). Weight and activation blocks are both 32 values, so each block's codes (0..31,
//! the fifth bit from `qh`) are dotted exactly in i32 and the block adds
//! `dx (d sum(q xq) + m sum(xq))` (q4_1, q5_1) or `dx d (sum(q xq) - 16 sum(xq))` (q5_0).
//!
//! Implementations: portable Rust (the definition) and AVX2.

use kiln_runtime::QuantFormat;

use super::formats::f16_at;
use super::int8::{Q8Row, BLOCK};

/// Whether `format` has an integer path here.
pub fn supports(format: QuantFormat) -> bool {
    matches!(
        format,
        QuantFormat::Q4_1 | QuantFormat::Q5_0 | QuantFormat::Q5_1
    )
}

/// Where a block's fields lie: (min at, qh at, codes at), `None` for fields the format lacks.
fn layout(format: QuantFormat) -> (Option<usize>, Option<usize>, usize) {
    match format {
        QuantFormat::Q4_1 => (Some(2), None, 4),
        QuantFormat::Q5_0 => (None, Some(2), 6),
        QuantFormat::Q5_1 => (Some(2), Some(4), 8),
        f => unreachable!("{f} has no integer path here"),
    }
}

#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Plain Rust: the definition the SIMD version must agree with.
pub fn row_dot_portable(format: QuantFormat, row: &[u8], x: Q8Row<'_>) -> f32 {
    let (min_at, qh_at, codes) = layout(format);
    let mut acc = 0.0f32;
    for (b, block) in row.chunks_exact(format.block_bytes()).enumerate() {
        let xq = &x.values()[b * BLOCK..][..BLOCK];
        let qh = qh_at.map_or(0, |at| u32_at(block, at));
        let mut s = 0i32;
        for (j, &q) in block[codes..codes + 16].iter().enumerate() {
            let q0 = u32::from(q & 15) | (((qh >> j) & 1) << 4);
            let q1 = u32::from(q >> 4) | (((qh >> (j + 16)) & 1) << 4);
            s += q0 as i32 * i32::from(xq[j]) + q1 as i32 * i32::from(xq[j + 16]);
        }
        let (d, dx, sum) = (f16_at(block, 0), x.scales()[b], x.sums()[b]);
        acc += match min_at {
            Some(at) => dx * (d * s as f32 + f16_at(block, at) * sum as f32),
            None => dx * d * (s - 16 * sum) as f32,
        };
    }
    acc
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use std::arch::x86_64::*;

    use super::{layout, u32_at, Q8Row, BLOCK};
    use crate::quant::int8::hsum256;
    use kiln_runtime::QuantFormat;

    pub fn row_dot_avx2(format: QuantFormat, row: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: only called after `int8`'s `has_avx2` (AVX2, FMA, F16C) held on this CPU.
        unsafe { row_dot(format, row, x) }
    }

    /// Bit i of `bits` as 0x10 in byte i (0 where clear): the codes' fifth bit.
    #[inline(always)]
    unsafe fn fifth_bits(bits: u32) -> __m256i {
        // Byte i takes byte i / 8 of `bits`; or-ing every bit but bit i % 8 and comparing with all
        // ones leaves 0xff exactly where that bit is set.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_setr_epi64x(
                0x0000_0000_0000_0000,
                0x0101_0101_0101_0101,
                0x0202_0202_0202_0202,
                0x0303_0303_0303_0303,
            ),
        );
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        let set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1));
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }

    /// The f16s at `p` and `p + 2` (F16C; `half` would convert in software here).
    #[inline(always)]
    unsafe fn f16_pair(p: *const u8) -> (f32, f32) {
        let bits = std::ptr::read_unaligned(p as *const u32);
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_shuffle_ps(v, v, 1)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn row_dot(format: QuantFormat, row: &[u8], x: Q8Row<'_>) -> f32 {
        let (min_at, qh_at, codes) = layout(format);
        let (xv, xs, sums) = (x.values().as_ptr(), x.scales(), x.sums());
        let low = _mm_set1_epi8(0x0f);
        let mut acc = _mm256_setzero_ps();
        // The offsets' part of every block, summed on the side: m dx sum(xq), or -16 d dx sum(xq).
        let mut offset = 0.0f32;
        for (b, block) in row.chunks_exact(format.block_bytes()).enumerate() {
            let packed = _mm_loadu_si128(block.as_ptr().add(codes) as *const __m128i);
            // Byte j holds weight j in its low nibble and weight j + 16 in its high one.
            let lo = _mm_and_si128(packed, low);
            let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
            let mut q = _mm256_set_m128i(hi, lo);
            if let Some(at) = qh_at {
                q = _mm256_or_si256(q, fifth_bits(u32_at(block, at)));
            }
            let v = _mm256_loadu_si256(xv.add(b * BLOCK) as *const __m256i);
            // Codes below 32 and |v| <= 127: the pair sums stay far inside i16.
            let s = _mm256_madd_epi16(_mm256_maddubs_epi16(q, v), _mm256_set1_epi16(1));
            // d, then m where the format has one (m follows d in q4_1 and q5_1).
            let (d, m) = f16_pair(block.as_ptr());
            let dd = d * xs[b];
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dd), acc);
            offset += match min_at {
                Some(_) => m * xs[b] * sums[b] as f32,
                None => -16.0 * dd * sums[b] as f32,
            };
        }
        hsum256(acc) + offset
    }
}
