//! q4_K and q6_K rows against up to 4 rounded activation rows on AVX-512 VNNI CPUs: the formats of
//! a Q4_K_M file's matrices, so batch-1 decode of llama.cpp's most common files runs 64 weights
//! per `dpbusd` as q4_0 does (`int8.rs`), where the AVX2 row dots take 32 per two instructions.
//! A block's codes are unpacked once into four 64-byte vectors, each two 32-weight chunks in
//! order, and shared by every input row of the tile; the chunk sums meet their float factors
//! (`d sc dx` for q4_K, `d sc dx` per 16-weight sub-block for q6_K) lane by lane, so the integer
//! sums are exactly `int8_kquants::row_dot_portable`'s and only the float additions are reordered.
//! q4_K's mins are `dmin m dx sum(xq)` per chunk, from the activation blocks' stored sums; q6_K's
//! `- 32` is folded into each lane's starting value (`Q8Rows`' lane bias, 32 times minus the sum
//! of the lane's 4 activations).

use std::arch::x86_64::*;

use kiln_runtime::QuantFormat;

use super::formats::f16_at;
use super::int8::{hsum256, Q8Rows, BLOCK, PREFETCH, TILE_ROWS};

/// Whether this file has a kernel for `format`.
pub fn supports(format: QuantFormat) -> bool {
    matches!(format, QuantFormat::Q4K | QuantFormat::Q6K)
}

/// `out[i]` = dot(`row`, input row `first + i`), for `out.len()` rows (at most `TILE_ROWS`).
/// Callers check `int8`'s `has_avx512` first.
pub fn tile_dot(format: QuantFormat, row: &[u8], x: &Q8Rows, first: usize, out: &mut [f32]) {
    assert!(
        row.len() / format.block_bytes() * 256 == x.k()
            && (first + out.len()) * x.k() <= x.values().len()
    );
    // SAFETY: callers reach this only after `has_avx512` held; the asserts above bound every read
    // of the row (whole blocks of `k`) and of the input rows.
    unsafe {
        match (format, out.len()) {
            (QuantFormat::Q4K, 1) => q4_k::<1>(row, x, first, out),
            (QuantFormat::Q4K, 2) => q4_k::<2>(row, x, first, out),
            (QuantFormat::Q4K, 3) => q4_k::<3>(row, x, first, out),
            (QuantFormat::Q4K, 4) => q4_k::<4>(row, x, first, out),
            (QuantFormat::Q6K, 1) => q6_k::<1>(row, x, first, out),
            (QuantFormat::Q6K, 2) => q6_k::<2>(row, x, first, out),
            (QuantFormat::Q6K, 3) => q6_k::<3>(row, x, first, out),
            (QuantFormat::Q6K, 4) => q6_k::<4>(row, x, first, out),
            (format, rows) => unreachable!("{format} tile of {rows} rows (max {TILE_ROWS})"),
        }
    }
}

/// Lane indices that spread 8 per-chunk values over the 16 lanes of chunks `2 j` and `2 j + 1`.
#[inline(always)]
unsafe fn chunk_pair_index(j: i32) -> __m512i {
    _mm512_set_epi32(
        2 * j + 1,
        2 * j + 1,
        2 * j + 1,
        2 * j + 1,
        2 * j + 1,
        2 * j + 1,
        2 * j + 1,
        2 * j + 1,
        2 * j,
        2 * j,
        2 * j,
        2 * j,
        2 * j,
        2 * j,
        2 * j,
        2 * j,
    )
}

/// Lane indices that spread 16 per-sub-block values over the 16 lanes of chunks `2 j`, `2 j + 1`
/// (4 lanes per 16-weight sub-block).
#[inline(always)]
unsafe fn sub_block_index(j: i32) -> __m512i {
    let s = 4 * j;
    _mm512_set_epi32(
        s + 3,
        s + 3,
        s + 3,
        s + 3,
        s + 2,
        s + 2,
        s + 2,
        s + 2,
        s + 1,
        s + 1,
        s + 1,
        s + 1,
        s,
        s,
        s,
        s,
    )
}

/// q4_K's 8 six-bit scales and 8 mins from its 12 scale bytes, each as 8 bytes: the same values
/// as `formats::scale_min_k4`, taken four at a time from the bytes as little-endian words (chunks
/// 0..3 keep the low 6 bits; chunks 4..7 take 4 bits from the third word and their top 2 from
/// the 2 spare bits of the first or second).
#[inline(always)]
fn scales_and_mins(s: &[u8]) -> (u64, u64) {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let low6 = 0x3f3f_3f3f;
    let low4 = 0x0f0f_0f0f;
    let top2 = 0x0303_0303;
    let scales_hi = (w2 & low4) | (((w0 >> 6) & top2) << 4);
    let mins_hi = ((w2 >> 4) & low4) | (((w1 >> 6) & top2) << 4);
    (
        u64::from(w0 & low6) | (u64::from(scales_hi) << 32),
        u64::from(w1 & low6) | (u64::from(mins_hi) << 32),
    )
}

/// 8 bytes as 8 f32 lanes.
#[inline(always)]
unsafe fn bytes_to_f32(b: u64) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(b as i64)))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_k<const R: usize>(row: &[u8], x: &Q8Rows, first: usize, out: &mut [f32]) {
    let (k, blocks) = (x.k(), x.k() / BLOCK);
    let values: [*const u8; R] =
        std::array::from_fn(|i| x.values().as_ptr().add((first + i) * k) as *const u8);
    let scales: [*const f32; R] =
        std::array::from_fn(|i| x.scales().as_ptr().add((first + i) * blocks));
    let sums: [*const i32; R] =
        std::array::from_fn(|i| x.block_sums().as_ptr().add((first + i) * blocks));
    let mask = _mm512_set1_epi8(0x0f);
    let pair_index: [__m512i; 4] = std::array::from_fn(|j| chunk_pair_index(j as i32));
    let mut acc = [_mm512_setzero_ps(); R];
    let mut mins = [_mm256_setzero_ps(); R];
    for (b, block) in row.chunks_exact(144).enumerate() {
        let p = block.as_ptr();
        // As `int8`'s tiles: a few KiB ahead, the decode stream's loads stay in flight.
        for line in 0..3 {
            _mm_prefetch::<_MM_HINT_T0>(p.add(PREFETCH + 64 * line) as *const i8);
        }
        let (sc, m) = scales_and_mins(&block[4..16]);
        let d_sc = _mm256_mul_ps(_mm256_set1_ps(f16_at(block, 0)), bytes_to_f32(sc));
        let dmin_m = _mm256_mul_ps(_mm256_set1_ps(f16_at(block, 2)), bytes_to_f32(m));
        // Codes of chunks 2j (low nibbles of qs[32j..]) and 2j + 1 (high nibbles), j = 0..3, as
        // four vectors each holding two chunks in order.
        let mut codes = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            let q = _mm512_loadu_si512(p.add(16 + 64 * h) as *const __m512i);
            let lo = _mm512_and_si512(q, mask);
            let hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), mask);
            codes[2 * h] = _mm512_shuffle_i64x2(lo, hi, 0x44);
            codes[2 * h + 1] = _mm512_shuffle_i64x2(lo, hi, 0xee);
        }
        for i in 0..R {
            let dx = _mm256_loadu_ps(scales[i].add(b * 8));
            let xsum = _mm256_cvtepi32_ps(_mm256_loadu_si256(sums[i].add(b * 8) as *const __m256i));
            mins[i] = _mm256_fmadd_ps(_mm256_mul_ps(dmin_m, dx), xsum, mins[i]);
            let factor = _mm512_castps256_ps512(_mm256_mul_ps(d_sc, dx));
            let v = values[i].add(b * 256);
            for (j, &c) in codes.iter().enumerate() {
                let xv = _mm512_loadu_si512(v.add(64 * j) as *const __m512i);
                let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c, xv);
                let f = _mm512_permutexvar_ps(pair_index[j], factor);
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), f, acc[i]);
            }
        }
    }
    for i in 0..R {
        out[i] = _mm512_reduce_add_ps(acc[i]) - hsum256(mins[i]);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k<const R: usize>(row: &[u8], x: &Q8Rows, first: usize, out: &mut [f32]) {
    let (k, blocks) = (x.k(), x.k() / BLOCK);
    let values: [*const u8; R] =
        std::array::from_fn(|i| x.values().as_ptr().add((first + i) * k) as *const u8);
    let scales: [*const f32; R] =
        std::array::from_fn(|i| x.scales().as_ptr().add((first + i) * blocks));
    let bias: [*const i32; R] =
        std::array::from_fn(|i| x.lane_bias().as_ptr().add((first + i) * k / 4));
    let mask4 = _mm512_set1_epi8(0x0f);
    let mask_high = _mm512_set1_epi8(0x30);
    // qh's two bits for chunk t of a half sit at bits 2t; moved to bits 4..5 (16-bit lanes, the
    // lower 256 bits for the pair's first chunk, the upper for its second).
    let split = |a: i16, b: i16| {
        _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_set1_epi16(a)),
            _mm256_set1_epi16(b),
            1,
        )
    };
    let (left_01, right_23) = (split(4, 2), split(0, 2));
    let pair_index: [__m512i; 4] = std::array::from_fn(|j| chunk_pair_index(j as i32));
    let sub_index: [__m512i; 4] = std::array::from_fn(|j| sub_block_index(j as i32));
    let mut acc = [_mm512_setzero_ps(); R];
    for (b, block) in row.chunks_exact(210).enumerate() {
        let p = block.as_ptr();
        for line in 0..4 {
            _mm_prefetch::<_MM_HINT_T0>(p.add(PREFETCH + 64 * line) as *const i8);
        }
        let d_sc = _mm512_mul_ps(
            _mm512_set1_ps(f16_at(block, 208)),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                p.add(192) as *const __m128i
            ))),
        );
        // Chunk c = 4n + t: low 4 bits from ql[64n + 32(t % 2)..] (nibble t / 2), high 2 bits
        // from qh[32n..] at bit 2t. Vector 2n + t / 2 holds chunks 4n + 2(t / 2) and the next.
        let mut codes = [_mm512_setzero_si512(); 4];
        for n in 0..2 {
            let ql = _mm512_loadu_si512(p.add(64 * n) as *const __m512i);
            let qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256(p.add(128 + 32 * n) as *const __m256i));
            let high_01 = _mm512_and_si512(_mm512_sllv_epi16(qh, left_01), mask_high);
            let high_23 = _mm512_and_si512(_mm512_srlv_epi16(qh, right_23), mask_high);
            codes[2 * n] = _mm512_or_si512(_mm512_and_si512(ql, mask4), high_01);
            codes[2 * n + 1] =
                _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), mask4), high_23);
        }
        let factors: [__m512; 4] =
            std::array::from_fn(|j| _mm512_permutexvar_ps(sub_index[j], d_sc));
        for i in 0..R {
            let dx = _mm512_castps256_ps512(_mm256_loadu_ps(scales[i].add(b * 8)));
            let v = values[i].add(b * 256);
            let lanes = bias[i].add(b * 64);
            for (j, &c) in codes.iter().enumerate() {
                let xv = _mm512_loadu_si512(v.add(64 * j) as *const __m512i);
                let start = _mm512_loadu_si512(lanes.add(16 * j) as *const __m512i);
                let s = _mm512_dpbusd_epi32(start, c, xv);
                let f = _mm512_mul_ps(factors[j], _mm512_permutexvar_ps(pair_index[j], dx));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), f, acc[i]);
            }
        }
    }
    for i in 0..R {
        out[i] = _mm512_reduce_add_ps(acc[i]);
    }
}
