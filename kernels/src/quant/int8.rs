//! Integer dot products of q4_0 / q8_0 weight rows (and, through `int8_kquants.rs` and
//! `int8_legacy.rs`, of q2_K .. q6_K and q4_1 / q5_0 / q5_1 rows) with activations rounded to 8
//! bits, as llama.cpp runs them on CPUs: each 32-value block of the activation row gets an f32
//! scale and i8 values, so a block's 32 products are summed exactly in i32 by byte-multiply
//! instructions and only the block's sum meets the two scales. Decoding the weights to f32 first,
//! as `blocks::dot_block` does, costs several instructions per weight and kept batch-1 decode far
//! below memory speed.
//!
//! Implementations: AVX-512 VNNI tiles of up to 4 input rows against one weight row (64 weights per
//! `dpbusd`), AVX2 row dots (32 weights per two instructions), portable Rust. From 4 input rows up,
//! `int8_panel.rs` takes over with repacked weights.
//!
//! Rounding the activations adds a relative error of about 0.5% per output (the tests state the
//! bound); the f32 path in `blocks.rs` stays the exact reference the GPU kernels are checked against.

use half::f16;
use kiln_runtime::QuantFormat;

#[cfg(target_arch = "x86_64")]
use super::int8_kquants_avx512;
use super::{int8_kquants, int8_legacy};

/// Values per activation block: both weight formats here use 32-value blocks.
pub const BLOCK: usize = 32;

/// The sum of a 256-bit vector's 8 f32 lanes: the last step of the AVX2 row dots.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Bytes ahead of the block being read that the AVX-512 row dots prefetch (best between 4 and
/// 8 KiB on the 2-vCPU box; x86 prefetches past the end of a row cannot fault).
pub const PREFETCH: usize = 4096;

/// Rows of activations rounded to i8 per 32-value block, laid out for one weight format.
pub struct Q8Rows {
    k: usize,
    values: Vec<i8>,
    scales: Vec<f32>,
    /// Each block's sum of `values`: q4_0 stores weights as `q - 8`, so `sum(w * x)` is
    /// `sum(q * x) - 8 * sum(x)`, and the unsigned `q` feeds the byte multiplies directly.
    sums: Vec<i32>,
    /// For the AVX-512 path, whose i32 lanes each sum 4 products: minus the weight format's
    /// offset (8 for q4_0; 128 for q8_0, whose signed bytes are shifted to unsigned; 32 for q6_K) times the sum
    /// of each 4 values, the starting value of each lane.
    lane_bias: Vec<i32>,
    /// Each block's scale repeated over its 8 lanes, for the same path.
    lane_scales: Vec<f32>,
    /// Minus the offset times each block's sum: the batched path's starting value per block.
    pub(super) block_bias: Vec<i32>,
}

/// One activation row of a `Q8Rows`.
#[derive(Clone, Copy)]
pub struct Q8Row<'a> {
    values: &'a [i8],
    scales: &'a [f32],
    sums: &'a [i32],
}

impl Q8Rows {
    /// Rounds `x` (rows of `k` values, `k` a multiple of 32) block by block for dot products with
    /// `format` weights: scale = max |x| / 127.
    pub fn quantize(x: &[f32], k: usize, format: QuantFormat) -> Q8Rows {
        debug_assert!(k.is_multiple_of(BLOCK) && x.len().is_multiple_of(k));
        let blocks = x.len() / BLOCK;
        let mut rows = Q8Rows {
            k,
            values: vec![0; x.len()],
            scales: vec![0.0; blocks],
            sums: vec![0; blocks],
            lane_bias: Vec::new(),
            lane_scales: Vec::new(),
            block_bias: Vec::new(),
        };
        for (((x, q), scale), sum) in x
            .chunks_exact(BLOCK)
            .zip(rows.values.chunks_exact_mut(BLOCK))
            .zip(&mut rows.scales)
            .zip(&mut rows.sums)
        {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (q, &v) in q.iter_mut().zip(x) {
                *q = (v * inv).round() as i8;
            }
            *scale = d;
            *sum = q.iter().map(|&v| i32::from(v)).sum();
        }
        let offset = match format {
            QuantFormat::Q8_0 => 128,
            QuantFormat::Q6K => 32,
            _ => 8,
        };
        rows.lane_bias = rows
            .values
            .chunks_exact(4)
            .map(|q| -offset * q.iter().map(|&v| i32::from(v)).sum::<i32>())
            .collect();
        rows.lane_scales = rows.scales.iter().flat_map(|&d| [d; 8]).collect();
        rows.block_bias = rows.sums.iter().map(|&s| -offset * s).collect();
        rows
    }

    pub fn rows(&self) -> usize {
        self.values.len() / self.k
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub(super) fn values(&self) -> &[i8] {
        &self.values
    }

    pub(super) fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Each block's sum of its i8 values, over all rows.
    pub(super) fn block_sums(&self) -> &[i32] {
        &self.sums
    }

    /// Each 4 values' starting lane value for `dpbusd` (see the field), over all rows.
    pub(super) fn lane_bias(&self) -> &[i32] {
        &self.lane_bias
    }

    pub fn row(&self, i: usize) -> Q8Row<'_> {
        let b = self.k / BLOCK;
        Q8Row {
            values: &self.values[i * self.k..(i + 1) * self.k],
            scales: &self.scales[i * b..(i + 1) * b],
            sums: &self.sums[i * b..(i + 1) * b],
        }
    }
}

impl Q8Row<'_> {
    pub fn values(&self) -> &[i8] {
        self.values
    }

    pub fn scales(&self) -> &[f32] {
        self.scales
    }

    /// Each block's sum of its i8 values.
    pub fn sums(&self) -> &[i32] {
        self.sums
    }
}

/// Whether `format` has an integer path (nf4's values are a lookup table, not integers): q4_0 and
/// q8_0 here, q2_K .. q6_K in `int8_kquants.rs`, q4_1 / q5_0 / q5_1 in `int8_legacy.rs`.
pub fn supports(format: QuantFormat) -> bool {
    matches!(format, QuantFormat::Q4_0 | QuantFormat::Q8_0)
        || int8_kquants::supports(format)
        || int8_legacy::supports(format)
}

/// `dot(row, x)` for one packed weight row; the best implementation this CPU runs.
pub type RowDot = fn(QuantFormat, &[u8], Q8Row<'_>) -> f32;

/// One packed weight row against input rows `first..first + out.len()` of `x` (at most
/// `TILE_ROWS`), written to `out`: the weight blocks are decoded once for all of them.
pub type TileDot = fn(QuantFormat, &[u8], &Q8Rows, usize, &mut [f32]);

/// Input rows one `TileDot` call takes at most.
pub const TILE_ROWS: usize = 4;

/// Whether this CPU has AVX-512 VNNI tiles for `format`'s K-quant rows, fast enough for any
/// number of input rows (each tile unpacks a block once for 4 rows).
pub fn has_wide_tiles(format: QuantFormat) -> bool {
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx512() && int8_kquants_avx512::supports(format) {
        return true;
    }
    let _ = format;
    false
}

/// Picks the widest instruction set this CPU has, once per call site.
pub fn row_dot_for_this_cpu() -> RowDot {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx2() {
            return x86::row_dot_avx2;
        }
    }
    row_dot_portable
}

/// The `TileDot` for `format` on this CPU: for q4_0 / q8_0, AVX-512 VNNI takes 64 weights per
/// instruction for up to four input rows at once; elsewhere (and for the other formats) the row
/// dot runs once per input row.
pub fn tile_dot_for_this_cpu(format: QuantFormat) -> TileDot {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx512() && matches!(format, QuantFormat::Q4_0 | QuantFormat::Q8_0) {
            return x86::tile_dot_avx512;
        }
        if x86::has_avx512() && int8_kquants_avx512::supports(format) {
            return int8_kquants_avx512::tile_dot;
        }
        if x86::has_avx2() {
            return |format, row, x, first, out| {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = x86::row_dot_avx2(format, row, x.row(first + i));
                }
            };
        }
    }
    tile_dot_portable
}

fn tile_dot_portable(format: QuantFormat, row: &[u8], x: &Q8Rows, first: usize, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = row_dot_portable(format, row, x.row(first + i));
    }
}

/// Every implementation this CPU can run, named, for tests that compare them.
pub fn implementations() -> Vec<(&'static str, RowDot)> {
    let mut all: Vec<(&'static str, RowDot)> = vec![("portable", row_dot_portable)];
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx2() {
            all.push(("avx2", x86::row_dot_avx2));
        }
    }
    all
}

/// Every tile implementation this CPU can run, named.
pub fn tile_implementations() -> Vec<(&'static str, TileDot)> {
    let mut all: Vec<(&'static str, TileDot)> = vec![("portable", tile_dot_portable)];
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx512() {
        all.push(("avx512", |format, row, x, first, out| {
            if int8_kquants_avx512::supports(format) {
                int8_kquants_avx512::tile_dot(format, row, x, first, out)
            } else {
                x86::tile_dot_avx512(format, row, x, first, out)
            }
        }));
    }
    all
}

/// Plain Rust: the definition the SIMD versions must agree with.
pub fn row_dot_portable(format: QuantFormat, row: &[u8], x: Q8Row<'_>) -> f32 {
    if int8_kquants::supports(format) {
        return int8_kquants::row_dot_portable(format, row, x);
    }
    if int8_legacy::supports(format) {
        return int8_legacy::row_dot_portable(format, row, x);
    }
    let mut acc = 0.0f32;
    match format {
        QuantFormat::Q4_0 => {
            for (b, block) in row.chunks_exact(18).enumerate() {
                let xq = &x.values[b * BLOCK..(b + 1) * BLOCK];
                let mut s = 0i32;
                for (j, &q) in block[2..18].iter().enumerate() {
                    s += i32::from(q & 15) * i32::from(xq[j])
                        + i32::from(q >> 4) * i32::from(xq[j + 16]);
                }
                acc += scale(block) * x.scales[b] * (s - 8 * x.sums[b]) as f32;
            }
        }
        QuantFormat::Q8_0 => {
            for (b, block) in row.chunks_exact(34).enumerate() {
                let xq = &x.values[b * BLOCK..(b + 1) * BLOCK];
                let s: i32 = block[2..34]
                    .iter()
                    .zip(xq)
                    .map(|(&w, &v)| i32::from(w as i8) * i32::from(v))
                    .sum();
                acc += scale(block) * x.scales[b] * s as f32;
            }
        }
        f => unreachable!("{f} has no integer path (see `supports`)"),
    }
    acc
}

#[inline(always)]
fn scale(block: &[u8]) -> f32 {
    f16::from_le_bytes([block[0], block[1]]).to_f32()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{hsum256, Q8Row, Q8Rows, BLOCK, PREFETCH, TILE_ROWS};
    use kiln_runtime::QuantFormat;

    pub fn has_avx2() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    pub fn has_avx512() -> bool {
        has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    }

    pub fn tile_dot_avx512(
        format: QuantFormat,
        row: &[u8],
        x: &Q8Rows,
        first: usize,
        out: &mut [f32],
    ) {
        // SAFETY: only returned by `tile_dot_for_this_cpu` / `tile_implementations` after
        // `has_avx512`; the row and input ranges are checked by `tile`'s asserts.
        unsafe {
            match (format, out.len()) {
                (QuantFormat::Q4_0, 1) => tile::<Q4, 1>(row, x, first, out),
                (QuantFormat::Q4_0, 2) => tile::<Q4, 2>(row, x, first, out),
                (QuantFormat::Q4_0, 3) => tile::<Q4, 3>(row, x, first, out),
                (QuantFormat::Q4_0, 4) => tile::<Q4, 4>(row, x, first, out),
                (QuantFormat::Q8_0, 1) => tile::<Q8, 1>(row, x, first, out),
                (QuantFormat::Q8_0, 2) => tile::<Q8, 2>(row, x, first, out),
                (QuantFormat::Q8_0, 3) => tile::<Q8, 3>(row, x, first, out),
                (QuantFormat::Q8_0, 4) => tile::<Q8, 4>(row, x, first, out),
                (format, rows) => unreachable!("{format} tile of {rows} rows (max {TILE_ROWS})"),
            }
        }
    }

    /// A weight format's blocks as unsigned bytes for `dpbusd`, with their scales over the lanes.
    trait Blocks {
        const BYTES: usize;
        /// Two consecutive blocks at `p`: 64 unsigned bytes, and 16 lanes of scales (8 each).
        unsafe fn pair(p: *const u8) -> (__m512i, __m512);
        /// One block: 32 unsigned bytes and 8 lanes of its scale.
        unsafe fn one(p: *const u8) -> (__m256i, __m256);
    }

    /// q4_0: byte j holds element j in its low nibble and element j + 16 in its high one; the
    /// nibbles are used as they are (0..15) and the `- 8` comes from the lane bias.
    struct Q4;
    /// q8_0: signed bytes, shifted by 128 to unsigned (the lane bias takes the 128 back off).
    struct Q8;

    impl Blocks for Q4 {
        const BYTES: usize = 18;

        /// Decode is most of a batch-1 row dot's work, so the pair is built in the wide
        /// registers: both blocks' nibbles loaded once, each copied into two 128-bit lanes, the
        /// copies in lanes 1 and 3 shifted down a nibble, then all masked to 4 bits.
        #[inline(always)]
        unsafe fn pair(p: *const u8) -> (__m512i, __m512) {
            let a = _mm_loadu_si128(p.add(2) as *const __m128i);
            let b = _mm_loadu_si128(p.add(Self::BYTES + 2) as *const __m128i);
            let both = _mm512_castsi256_si512(_mm256_set_m128i(b, a));
            let spread = _mm512_shuffle_i64x2::<0b01_01_00_00>(both, both);
            let high = _mm512_mask_srli_epi16::<4>(spread, 0xff00_ff00, spread);
            let q = _mm512_and_si512(high, _mm512_set1_epi8(0x0f));
            let da = std::ptr::read_unaligned(p as *const u16);
            let db = std::ptr::read_unaligned(p.add(Self::BYTES) as *const u16);
            let halves = _mm_cvtsi32_si128((u32::from(da) | u32::from(db) << 16) as i32);
            let scales = _mm512_castps128_ps512(_mm_cvtph_ps(halves));
            let lanes = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            (q, _mm512_permutexvar_ps(lanes, scales))
        }

        #[inline(always)]
        unsafe fn one(p: *const u8) -> (__m256i, __m256) {
            let low = _mm_set1_epi8(0x0f);
            let packed = _mm_loadu_si128(p.add(2) as *const __m128i);
            let lo = _mm_and_si128(packed, low);
            let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
            (_mm256_set_m128i(hi, lo), _mm256_set1_ps(f16_scale(p)))
        }
    }

    impl Blocks for Q8 {
        const BYTES: usize = 34;

        #[inline(always)]
        unsafe fn pair(p: *const u8) -> (__m512i, __m512) {
            let (a, da) = Self::one(p);
            let (b, db) = Self::one(p.add(Self::BYTES));
            (join_i(a, b), join_f(da, db))
        }

        #[inline(always)]
        unsafe fn one(p: *const u8) -> (__m256i, __m256) {
            let w = _mm256_loadu_si256(p.add(2) as *const __m256i);
            let u = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
            (u, _mm256_set1_ps(f16_scale(p)))
        }
    }

    #[inline(always)]
    unsafe fn join_i(a: __m256i, b: __m256i) -> __m512i {
        _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1)
    }

    #[inline(always)]
    unsafe fn join_f(a: __m256, b: __m256) -> __m512 {
        let wide = _mm512_castps_pd(_mm512_castps256_ps512(a));
        _mm512_castpd_ps(_mm512_insertf64x4(wide, _mm256_castps_pd(b), 1))
    }

    /// `R` input rows against one weight row, two blocks (64 weights) per step: each step is one
    /// `dpbusd` per input row, its lanes starting from the lane bias, then the i32 lane sums times
    /// (weight scale x input scale) added into f32 accumulators.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn tile<B: Blocks, const R: usize>(
        row: &[u8],
        x: &Q8Rows,
        first: usize,
        out: &mut [f32],
    ) {
        let k = x.k;
        let blocks = k / BLOCK;
        assert!(row.len() == blocks * B::BYTES && (first + R) * k <= x.values.len());
        let values: [*const i8; R] =
            std::array::from_fn(|i| x.values.as_ptr().add((first + i) * k));
        let bias: [*const i32; R] =
            std::array::from_fn(|i| x.lane_bias.as_ptr().add((first + i) * k / 4));
        let scales: [*const f32; R] =
            std::array::from_fn(|i| x.lane_scales.as_ptr().add((first + i) * k / 4));
        let w = row.as_ptr();
        let mut acc = [_mm512_setzero_ps(); R];
        for pair in 0..blocks / 2 {
            // Batch-1 decode streams gigabytes of weights from memory: fetching a few KiB ahead
            // (the next rows of the task's run) keeps more loads in flight than the hardware
            // prefetchers do (Mistral 7B q4_K_M decode on the 2-vCPU box: 3.1 -> 4.4 tok/s).
            for line in (0..2 * B::BYTES).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(
                    w.add(pair * 2 * B::BYTES + PREFETCH + line) as *const i8
                );
            }
            let (q, d) = B::pair(w.add(pair * 2 * B::BYTES));
            for i in 0..R {
                let start = _mm512_loadu_si512(bias[i].add(pair * 16) as *const __m512i);
                let v = _mm512_loadu_si512(values[i].add(pair * 64) as *const __m512i);
                let sums = _mm512_dpbusd_epi32(start, q, v);
                let scale = _mm512_mul_ps(d, _mm512_loadu_ps(scales[i].add(pair * 16)));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc[i]);
            }
        }
        for i in 0..R {
            let mut total = _mm512_reduce_add_ps(acc[i]);
            if blocks % 2 == 1 {
                let last = blocks - 1;
                let (q, d) = B::one(w.add(last * B::BYTES));
                let start = _mm256_loadu_si256(bias[i].add(last * 8) as *const __m256i);
                let v = _mm256_loadu_si256(values[i].add(last * BLOCK) as *const __m256i);
                let sums = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(start, q, v));
                let scale = _mm256_mul_ps(d, _mm256_loadu_ps(scales[i].add(last * 8)));
                total += hsum256(_mm256_mul_ps(sums, scale));
            }
            out[i] = total;
        }
    }

    pub fn row_dot_avx2(format: QuantFormat, row: &[u8], x: Q8Row<'_>) -> f32 {
        // SAFETY: only returned by `row_dot_for_this_cpu` / `implementations` after `has_avx2`.
        unsafe { row_dot(format, row, x) }
    }

    /// `sum(u[i] * s[i])` over 32 unsigned and 32 signed bytes, as eight i32 partial sums.
    #[inline(always)]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
        // No overflow: |u * s| <= 128 * 127 and pairs add to at most 32,512 < 32,767.
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    #[inline(always)]
    unsafe fn f16_scale(p: *const u8) -> f32 {
        let bits = std::ptr::read_unaligned(p as *const u16);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn row_dot(format: QuantFormat, row: &[u8], x: Q8Row<'_>) -> f32 {
        if super::int8_kquants::supports(format) {
            return super::int8_kquants::x86::row_dot_avx2(format, row, x);
        }
        if super::int8_legacy::supports(format) {
            return super::int8_legacy::x86::row_dot_avx2(format, row, x);
        }
        let blocks = x.scales.len();
        let xs = x.values.as_ptr();
        let mut acc = _mm256_setzero_ps();
        match format {
            QuantFormat::Q4_0 => {
                debug_assert_eq!(row.len(), blocks * 18);
                let low = _mm_set1_epi8(0x0f);
                // sum over blocks of d_w * d_x * sum(x): the `- 8` of every weight, applied once.
                let mut offset = 0.0f32;
                for b in 0..blocks {
                    let p = row.as_ptr().add(b * 18);
                    let d = f16_scale(p) * x.scales[b];
                    let packed = _mm_loadu_si128(p.add(2) as *const __m128i);
                    // Byte j holds element j in its low nibble and element j + 16 in its high one.
                    let lo = _mm_and_si128(packed, low);
                    let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
                    let q = _mm256_set_m128i(hi, lo);
                    let v = _mm256_loadu_si256(xs.add(b * BLOCK) as *const __m256i);
                    let sums = _mm256_cvtepi32_ps(dot_u8_i8(q, v));
                    acc = _mm256_fmadd_ps(sums, _mm256_set1_ps(d), acc);
                    offset += d * x.sums[b] as f32;
                }
                hsum256(acc) - 8.0 * offset
            }
            QuantFormat::Q8_0 => {
                debug_assert_eq!(row.len(), blocks * 34);
                for b in 0..blocks {
                    let p = row.as_ptr().add(b * 34);
                    let d = f16_scale(p) * x.scales[b];
                    let w = _mm256_loadu_si256(p.add(2) as *const __m256i);
                    let v = _mm256_loadu_si256(xs.add(b * BLOCK) as *const __m256i);
                    // Signed x signed as unsigned x signed: |w| times v with w's sign moved onto v.
                    let prod = dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(v, w));
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(prod), _mm256_set1_ps(d), acc);
                }
                hsum256(acc)
            }
            f => unreachable!("{f} has no integer path (see `supports`)"),
        }
    }
}
