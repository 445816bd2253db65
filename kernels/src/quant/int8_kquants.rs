//! Integer dot products of K-quant (q2_K .. q6_K) weight rows with activations rounded to 8 bits per 32 values
//! (`int8::Q8Rows`, as for q4_0), as llama.cpp runs K-quants on CPUs. llama.cpp's q8_K activations
//! carry one scale per 256 values; here each 32 have their own, so the integer sums stop at 32
//! weights and meet the float scales there:
//! - q4_K / q5_K: chunk c (one 32-weight sub-block) has a 6-bit scale `sc` and min `m`:
//!   `dx (d sc sum(q xq) - dmin m sum(xq))`, `sum(xq)` being the activation block's stored sum
//!   (q5_K's codes take their fifth bit from `qh`).
//! - q6_K: chunk c is two 16-weight sub-blocks with i8 scales, applied in integers (`madd`):
//!   `dx d (sc0 sum0((q - 32) xq) + sc1 sum1((q - 32) xq))`; q3_K likewise with its signed 3-bit
//!   codes and 6-bit scales (minus 32).
//! - q2_K: two 16-weight sub-blocks with 4-bit scales and mins, both applied in integers:
//!   `dx (d (sc0 sum0(q xq) + sc1 sum1(q xq)) - dmin (m0 sum0(xq) + m1 sum1(xq)))`.
//!
//! Implementations: portable Rust (the definition) and AVX2, where a chunk's 32 codes are 32
//! contiguous bytes: q4_K's nibbles of `qs[32 (c / 2) ..]` (q5_K's with bit c of `qh[..32]`), q6_K's
//! of `ql[64 n + 32 (t % 2) ..]` with two bits of `qh[32 n ..]`, q2_K's and q3_K's two bits of
//! `qs[32 n ..]` (q3_K's with bit c of `hmask[..32]`), for chunk c = 4 n + t.

use kiln_runtime::QuantFormat;

use super::formats::{f16_at, q3_k, scale_min_k4};
use super::int8::{Q8Row, BLOCK};

/// Whether `format` is a K-quant with an integer path here.
pub fn supports(format: QuantFormat) -> bool {
    matches!(
        format,
        QuantFormat::Q2K
            | QuantFormat::Q3K
            | QuantFormat::Q4K
            | QuantFormat::Q5K
            | QuantFormat::Q6K
    )
}

/// Plain Rust: the definition the SIMD version must agree with.
pub fn row_dot_portable(format: QuantFormat, row: &[u8], x: Q8Row<'_>) -> f32 {
    let mut acc = 0.0f32;
    let (xv, xs) = (x.values(), x.scales());
    match format {
        QuantFormat::Q4K | QuantFormat::Q5K => {
            let five = format == QuantFormat::Q5K;
            let (bytes, codes) = if five { (176, 48) } else { (144, 16) };
            for (b, block) in row.chunks_exact(bytes).enumerate() {
                let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
                for c in 0..8 {
                    let (sc, m) = scale_min_k4(c, &block[4..16]);
                    let xi = b * 8 + c;
                    let q = &block[codes + 32 * (c / 2)..][..32];
                    let shift = 4 * (c % 2);
                    let s: i32 = (0..32)
                        .map(|l| {
                            let high = if five {
                                ((block[16 + l] >> c) & 1) << 4
                            } else {
                                0
                            };
                            i32::from(((q[l] >> shift) & 15) | high) * i32::from(xv[xi * BLOCK + l])
                        })
                        .sum();
                    acc += xs[xi]
                        * (d * f32::from(sc) * s as f32
                            - dmin * f32::from(m) * x.sums()[xi] as f32);
                }
            }
        }
        QuantFormat::Q6K => {
            for (b, block) in row.chunks_exact(210).enumerate() {
                let d = f16_at(block, 208);
                for c in 0..8 {
                    let (n, t) = (c / 4, c % 4);
                    let low = &block[64 * n + 32 * (t % 2)..][..32];
                    let high = &block[128 + 32 * n..][..32];
                    let xi = b * 8 + c;
                    let xq = &xv[xi * BLOCK..][..BLOCK];
                    let mut s = 0i32;
                    for h in 0..2 {
                        let mut s16 = 0i32;
                        for l in 16 * h..16 * h + 16 {
                            let q = ((low[l] >> (4 * (t / 2))) & 15)
                                | (((high[l] >> (2 * t)) & 3) << 4);
                            s16 += (i32::from(q) - 32) * i32::from(xq[l]);
                        }
                        s += i32::from(block[192 + 2 * c + h] as i8) * s16;
                    }
                    acc += d * xs[xi] * s as f32;
                }
            }
        }
        QuantFormat::Q2K => {
            for (b, block) in row.chunks_exact(84).enumerate() {
                let (d, dmin) = (f16_at(block, 80), f16_at(block, 82));
                for c in 0..8 {
                    let (n, j) = (c / 4, c % 4);
                    let q = &block[16 + 32 * n..][..32];
                    let xi = b * 8 + c;
                    let xq = &xv[xi * BLOCK..][..BLOCK];
                    let (mut sq, mut sm) = (0i32, 0i32);
                    for h in 0..2 {
                        let sc = block[2 * c + h];
                        let (mut s16, mut x16) = (0i32, 0i32);
                        for l in 16 * h..16 * h + 16 {
                            s16 += i32::from((q[l] >> (2 * j)) & 3) * i32::from(xq[l]);
                            x16 += i32::from(xq[l]);
                        }
                        sq += i32::from(sc & 15) * s16;
                        sm += i32::from(sc >> 4) * x16;
                    }
                    acc += xs[xi] * (d * sq as f32 - dmin * sm as f32);
                }
            }
        }
        QuantFormat::Q3K => {
            for (b, block) in row.chunks_exact(110).enumerate() {
                let d = f16_at(block, 108);
                let scales = q3_k::scales(&block[96..108]);
                for c in 0..8 {
                    let (n, j) = (c / 4, c % 4);
                    let q = &block[32 + 32 * n..][..32];
                    let xi = b * 8 + c;
                    let xq = &xv[xi * BLOCK..][..BLOCK];
                    let mut s = 0i32;
                    for h in 0..2 {
                        let mut s16 = 0i32;
                        for l in 16 * h..16 * h + 16 {
                            let high = if block[l] & (1 << c) != 0 { 0 } else { 4 };
                            s16 += (i32::from((q[l] >> (2 * j)) & 3) - high) * i32::from(xq[l]);
                        }
                        s += scales[2 * c + h] * s16;
                    }
                    acc += d * xs[xi] * s as f32;
                }
            }
        }
        f => unreachable!("{f} is not a K-quant with an integer path"),
    }
    acc
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use std::arch::x86_64::*;

    use super::{f16_at, q3_k, scale_min_k4, Q8Row, BLOCK};
    use crate::quant::int8::hsum256;
    use kiln_runtime::QuantFormat;

    pub fn row_dot_avx2(format: QuantFormat, row: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: only called after `int8`'s `has_avx2` (AVX2, FMA, F16C) held on this CPU.
        unsafe {
            match format {
                QuantFormat::Q4K => q4_k::<false>(row, x),
                QuantFormat::Q5K => q4_k::<true>(row, x),
                QuantFormat::Q6K => q6_k(row, x),
                QuantFormat::Q2K => q2_k(row, x),
                QuantFormat::Q3K => q3_k_dot(row, x),
                f => unreachable!("{f} is not a K-quant with an integer path"),
            }
        }
    }

    /// `sum(u[i] * s[i])` over 32 unsigned and 32 signed bytes, as eight i32 partial sums (no
    /// overflow: the codes are below 64 and |s| <= 127).
    #[inline(always)]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    /// q4_K, or q5_K when `FIVE` (its codes' fifth bit from `qh`).
    unsafe fn q4_k<const FIVE: bool>(row: &[u8], x: Q8Row<'_>) -> f32 {
        let (bytes, codes): (usize, usize) = if FIVE { (176, 48) } else { (144, 16) };
        let (xv, xs, sums) = (x.values().as_ptr(), x.scales().as_ptr(), x.sums().as_ptr());
        let mask = _mm256_set1_epi8(0x0f);
        let mut acc = _mm256_setzero_ps();
        let mut mins = _mm256_setzero_ps();
        for (b, block) in row.chunks_exact(bytes).enumerate() {
            // The block's 8 chunk factors at once: d sc dx for the codes, dmin m dx sum(xq) for
            // the mins (summed in lanes, subtracted at the end).
            let mut sc = [0f32; 8];
            let mut m = [0f32; 8];
            for c in 0..8 {
                let (s, n) = scale_min_k4(c, &block[4..16]);
                (sc[c], m[c]) = (f32::from(s), f32::from(n));
            }
            let dx = _mm256_loadu_ps(xs.add(b * 8));
            let xsum = _mm256_cvtepi32_ps(_mm256_loadu_si256(sums.add(b * 8) as *const __m256i));
            let dmin = _mm256_mul_ps(
                _mm256_set1_ps(f16_at(block, 2)),
                _mm256_loadu_ps(m.as_ptr()),
            );
            mins = _mm256_fmadd_ps(_mm256_mul_ps(dmin, dx), xsum, mins);
            let mut factor = [0f32; 8];
            let d = _mm256_mul_ps(
                _mm256_set1_ps(f16_at(block, 0)),
                _mm256_loadu_ps(sc.as_ptr()),
            );
            _mm256_storeu_ps(factor.as_mut_ptr(), _mm256_mul_ps(d, dx));
            let qs = block.as_ptr().add(codes);
            let qh = if FIVE {
                _mm256_loadu_si256(block.as_ptr().add(16) as *const __m256i)
            } else {
                _mm256_setzero_si256()
            };
            let v = xv.add(b * 8 * BLOCK);
            for p in 0..4 {
                // One 32-byte load gives chunk 2p (low nibbles) and chunk 2p + 1 (high nibbles).
                let q = _mm256_loadu_si256(qs.add(32 * p) as *const __m256i);
                let mut lo = _mm256_and_si256(q, mask);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
                if FIVE {
                    // Bits 2p and 2p + 1 of each qh byte, moved to bit 4.
                    let bits = |c: i32| {
                        let b = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(c));
                        _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi8(1)), 4)
                    };
                    lo = _mm256_or_si256(lo, bits(2 * p as i32));
                    hi = _mm256_or_si256(hi, bits(2 * p as i32 + 1));
                }
                let v0 = _mm256_loadu_si256(v.add(2 * p * BLOCK) as *const __m256i);
                let v1 = _mm256_loadu_si256(v.add((2 * p + 1) * BLOCK) as *const __m256i);
                let s0 = _mm256_cvtepi32_ps(dot_u8_i8(lo, v0));
                let s1 = _mm256_cvtepi32_ps(dot_u8_i8(hi, v1));
                acc = _mm256_fmadd_ps(s0, _mm256_set1_ps(factor[2 * p]), acc);
                acc = _mm256_fmadd_ps(s1, _mm256_set1_ps(factor[2 * p + 1]), acc);
            }
        }
        hsum256(acc) - hsum256(mins)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6_k(row: &[u8], x: Q8Row<'_>) -> f32 {
        let (xv, xs) = (x.values().as_ptr(), x.scales());
        let mask4 = _mm256_set1_epi8(0x0f);
        let mask2 = _mm256_set1_epi8(0x03);
        let offset = _mm256_set1_epi8(32);
        let mut acc = _mm256_setzero_ps();
        for (b, block) in row.chunks_exact(210).enumerate() {
            let d = f16_at(block, 208);
            let p = block.as_ptr();
            for n in 0..2 {
                let high = _mm256_loadu_si256(p.add(128 + 32 * n) as *const __m256i);
                let ql = [
                    _mm256_loadu_si256(p.add(64 * n) as *const __m256i),
                    _mm256_loadu_si256(p.add(64 * n + 32) as *const __m256i),
                ];
                for t in 0..4 {
                    let c = 4 * n + t;
                    let xi = b * 8 + c;
                    let low = ql[t % 2];
                    let low = if t / 2 == 1 {
                        _mm256_srli_epi16(low, 4)
                    } else {
                        low
                    };
                    let hi = _mm256_and_si256(
                        _mm256_srl_epi16(high, _mm_cvtsi32_si128(2 * t as i32)),
                        mask2,
                    );
                    let q = _mm256_or_si256(_mm256_and_si256(low, mask4), _mm256_slli_epi16(hi, 4));
                    // q - 32 in [-32, 31]: |q - 32| times x with q - 32's sign moved onto x.
                    let signed = _mm256_sub_epi8(q, offset);
                    let v = _mm256_loadu_si256(xv.add(xi * BLOCK) as *const __m256i);
                    let pairs = _mm256_maddubs_epi16(
                        _mm256_sign_epi8(signed, signed),
                        _mm256_sign_epi8(v, signed),
                    );
                    // Lanes 0..7 hold l = 0..15 (sub-block 2c), lanes 8..15 l = 16..31.
                    let sc = _mm256_set_m128i(
                        _mm_set1_epi16(i16::from(block[192 + 2 * c + 1] as i8)),
                        _mm_set1_epi16(i16::from(block[192 + 2 * c] as i8)),
                    );
                    let s = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, sc));
                    acc = _mm256_fmadd_ps(s, _mm256_set1_ps(d * xs[xi]), acc);
                }
            }
        }
        hsum256(acc)
    }

    /// Two bits at `2 j` of each byte of `v`.
    #[inline(always)]
    unsafe fn crumbs(v: __m256i, j: usize) -> __m256i {
        _mm256_and_si256(
            _mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * j as i32)),
            _mm256_set1_epi8(3),
        )
    }

    /// 16 i16 lanes: `a` in lanes 0..7 (the chunk's first 16 weights), `b` in 8..15.
    #[inline(always)]
    unsafe fn two_scales(a: i16, b: i16) -> __m256i {
        _mm256_set_m128i(_mm_set1_epi16(b), _mm_set1_epi16(a))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q2_k(row: &[u8], x: Q8Row<'_>) -> f32 {
        let (xv, xs) = (x.values().as_ptr(), x.scales());
        let ones = _mm256_set1_epi8(1);
        let mut acc = _mm256_setzero_ps();
        let mut mins = _mm256_setzero_ps();
        for (b, block) in row.chunks_exact(84).enumerate() {
            let (d, dmin) = (f16_at(block, 80), f16_at(block, 82));
            let p = block.as_ptr();
            for n in 0..2 {
                let qs = _mm256_loadu_si256(p.add(16 + 32 * n) as *const __m256i);
                for j in 0..4 {
                    let c = 4 * n + j;
                    let xi = b * 8 + c;
                    let v = _mm256_loadu_si256(xv.add(xi * BLOCK) as *const __m256i);
                    let (s0, s1) = (block[2 * c], block[2 * c + 1]);
                    // Codes below 4, |v| <= 127, scales and mins below 16: far inside i16 / i32.
                    let pairs = _mm256_maddubs_epi16(crumbs(qs, j), v);
                    let sq = _mm256_madd_epi16(
                        pairs,
                        two_scales(i16::from(s0 & 15), i16::from(s1 & 15)),
                    );
                    let xsum = _mm256_maddubs_epi16(ones, v);
                    let sm =
                        _mm256_madd_epi16(xsum, two_scales(i16::from(s0 >> 4), i16::from(s1 >> 4)));
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sq), _mm256_set1_ps(d * xs[xi]), acc);
                    mins = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(sm),
                        _mm256_set1_ps(dmin * xs[xi]),
                        mins,
                    );
                }
            }
        }
        hsum256(acc) - hsum256(mins)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q3_k_dot(row: &[u8], x: Q8Row<'_>) -> f32 {
        let (xv, xs) = (x.values().as_ptr(), x.scales());
        let four = _mm256_set1_epi8(4);
        let mut acc = _mm256_setzero_ps();
        for (b, block) in row.chunks_exact(110).enumerate() {
            let d = f16_at(block, 108);
            let scales = q3_k::scales(&block[96..108]);
            let p = block.as_ptr();
            let hmask = _mm256_loadu_si256(p as *const __m256i);
            for n in 0..2 {
                let qs = _mm256_loadu_si256(p.add(32 + 32 * n) as *const __m256i);
                for j in 0..4 {
                    let c = 4 * n + j;
                    let xi = b * 8 + c;
                    // (low 2 bits | hmask bit c << 2) - 4: the signed code in [-4, 3].
                    let high = _mm256_and_si256(
                        _mm256_srl_epi16(hmask, _mm_cvtsi32_si128(c as i32)),
                        _mm256_set1_epi8(1),
                    );
                    let q = _mm256_sub_epi8(
                        _mm256_or_si256(crumbs(qs, j), _mm256_slli_epi16(high, 2)),
                        four,
                    );
                    let v = _mm256_loadu_si256(xv.add(xi * BLOCK) as *const __m256i);
                    let pairs =
                        _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(v, q));
                    let sc = two_scales(scales[2 * c] as i16, scales[2 * c + 1] as i16);
                    let s = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, sc));
                    acc = _mm256_fmadd_ps(s, _mm256_set1_ps(d * xs[xi]), acc);
                }
            }
        }
        hsum256(acc)
    }
}
