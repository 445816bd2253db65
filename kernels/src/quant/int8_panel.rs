//! The batched integer path on AVX-512 VNNI CPUs (prefill): 16 weight rows are repacked into a
//! panel whose 64-byte vectors hold 4 consecutive weights of each of the 16 rows, so one `dpbusd`
//! against 4 input values broadcast to every lane does 64 multiply-adds for 16 outputs at once.
//! Block scales then meet the i32 sums once per 32 weights (16 weight scales times one input
//! scale), not once per 4 weights as in the row-dot layout. The repacking costs one pass over the
//! 16 rows and is shared by every input row, so it pays off only when many input rows share it
//! (`MIN_ROWS`): a prompt, not a batch of decode steps. q4_K rows (most of a Q4_K_M file) repack
//! the same way: each 32-weight chunk's codes (0..15) with its scale `d sc` and min `dmin m`, the
//! mins meeting the activation block's sum once per chunk.

use kiln_runtime::QuantFormat;

use super::formats::{f16_at, scale_min_k4};
use super::int8::{Q8Rows, BLOCK};

/// Whether `format`'s rows can be repacked into panels (q4_0, q8_0 and q4_K).
pub fn supports(format: QuantFormat) -> bool {
    matches!(
        format,
        QuantFormat::Q4_0 | QuantFormat::Q8_0 | QuantFormat::Q4K
    )
}

/// Weight rows per panel: one per i32 lane of a 512-bit vector.
pub const PANEL_ROWS: usize = 16;
/// Input rows below which the row dots are faster than repacking. Measured on the 2-vCPU AVX-512
/// VNNI box with a 0.8B q4_0 model (`llm/examples/batch_decode.rs`, one decode step of B
/// sequences): row dots 92 / 275 / 594 ms at B = 4 / 16 / 32, panels 226 / 307-404 / 469 ms, so
/// the crossover lies between 16 and 32 rows.
pub const MIN_ROWS: usize = 32;
/// Input rows one kernel call takes (its accumulators stay in registers).
pub const TILE_ROWS: usize = 4;

/// Up to 16 packed weight rows, interleaved: `bytes[(b * 8 + g) * 64 + r * 4 + t]` is weight
/// `b * 32 + 4 * g + t` of row `r` as an unsigned byte (q4_0's nibble 0..15; q8_0's value + 128),
/// `scales[b * 16 + r]` row `r`'s scale for 32-weight block `b`, and for q4_K (whose codes are
/// unsigned with a min, not centred by the lane bias) `mins[b * 16 + r]` its min, subtracted as
/// `min * sum(x)`. Rows past the last are zero.
pub struct Panel {
    bytes: Vec<u8>,
    scales: Vec<f32>,
    mins: Vec<f32>,
    has_mins: bool,
    rows: usize,
}

impl Panel {
    pub fn new(k: usize) -> Panel {
        Panel {
            bytes: vec![0; k * PANEL_ROWS],
            scales: vec![0.0; k / BLOCK * PANEL_ROWS],
            mins: vec![0.0; k / BLOCK * PANEL_ROWS],
            has_mins: false,
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Fills the panel from `rows` consecutive packed rows of `row_bytes` each (at most 16).
    pub fn repack(&mut self, format: QuantFormat, rows: &[u8], row_bytes: usize) {
        let block_bytes = format.block_bytes();
        self.rows = rows.len() / row_bytes;
        self.has_mins = format == QuantFormat::Q4K;
        debug_assert!(self.rows <= PANEL_ROWS);
        self.bytes.fill(0);
        self.scales.fill(0.0);
        self.mins.fill(0.0);
        let mut values = [0u8; BLOCK];
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                match format {
                    QuantFormat::Q4_0 => {
                        for (j, &q) in block[2..18].iter().enumerate() {
                            values[j] = q & 15;
                            values[j + 16] = q >> 4;
                        }
                        self.put(b, r, &values, f16_at(block, 0), 0.0);
                    }
                    QuantFormat::Q8_0 => {
                        for (v, &q) in values.iter_mut().zip(&block[2..34]) {
                            *v = q ^ 0x80;
                        }
                        self.put(b, r, &values, f16_at(block, 0), 0.0);
                    }
                    QuantFormat::Q4K => {
                        let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
                        for c in 0..8 {
                            let (sc, m) = scale_min_k4(c, &block[4..16]);
                            let codes = &block[16 + 32 * (c / 2)..][..32];
                            for (v, &q) in values.iter_mut().zip(codes) {
                                *v = (q >> (4 * (c % 2))) & 15;
                            }
                            let scale = d * f32::from(sc);
                            self.put(b * 8 + c, r, &values, scale, dmin * f32::from(m));
                        }
                    }
                    f => unreachable!("{f} has no integer panel"),
                }
            }
        }
    }

    /// Row `r`'s 32-weight block `b`: its unsigned codes, scale and min.
    fn put(&mut self, b: usize, r: usize, values: &[u8; BLOCK], scale: f32, min: f32) {
        self.scales[b * PANEL_ROWS + r] = scale;
        self.mins[b * PANEL_ROWS + r] = min;
        for (g, four) in values.chunks_exact(4).enumerate() {
            let at = (b * 8 + g) * 64 + r * 4;
            self.bytes[at..at + 4].copy_from_slice(four);
        }
    }
}

/// `out[i][r]` = dot(panel row `r`, input row `first + i`) for `i < out.len()` (at most
/// `TILE_ROWS`).
pub type PanelDot = fn(&Panel, &Q8Rows, usize, &mut [[f32; PANEL_ROWS]]);

/// The panel kernel, where this CPU has AVX-512 VNNI.
pub fn panel_dot_for_this_cpu() -> Option<PanelDot> {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        return Some(x86::panel_dot);
    }
    None
}

/// The same sums in plain Rust (for tests).
pub fn panel_dot_portable(panel: &Panel, x: &Q8Rows, first: usize, out: &mut [[f32; PANEL_ROWS]]) {
    let (k, blocks) = (x.k(), x.k() / BLOCK);
    for (i, out) in out.iter_mut().enumerate() {
        let row = first + i;
        let values = &x.values()[row * k..][..k];
        for (r, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for b in 0..blocks {
                let xb = row * blocks + b;
                let mut s = if panel.has_mins { 0 } else { x.block_bias[xb] };
                for j in 0..BLOCK {
                    let w = panel.bytes[(b * 8 + j / 4) * 64 + r * 4 + j % 4];
                    s += i32::from(w) * i32::from(values[b * BLOCK + j]);
                }
                let dx = x.scales()[xb];
                acc += s as f32 * (panel.scales[b * PANEL_ROWS + r] * dx);
                acc -= panel.mins[b * PANEL_ROWS + r] * (dx * x.block_sums()[xb] as f32);
            }
            *o = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Panel, PANEL_ROWS, TILE_ROWS};
    use crate::quant::int8::{Q8Rows, BLOCK};

    pub fn available() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }

    pub fn panel_dot(panel: &Panel, x: &Q8Rows, first: usize, out: &mut [[f32; PANEL_ROWS]]) {
        assert!(
            panel.bytes.len() == x.k() * PANEL_ROWS
                && (first + out.len()) * x.k() <= x.values().len()
        );
        // SAFETY: only returned by `panel_dot_for_this_cpu` after `available`; every read below is
        // inside the panel and input rows whose sizes were just checked.
        unsafe {
            match (panel.has_mins, out.len()) {
                (false, 1) => tile::<false, 1>(panel, x, first, out),
                (false, 2) => tile::<false, 2>(panel, x, first, out),
                (false, 3) => tile::<false, 3>(panel, x, first, out),
                (false, 4) => tile::<false, 4>(panel, x, first, out),
                (true, 1) => tile::<true, 1>(panel, x, first, out),
                (true, 2) => tile::<true, 2>(panel, x, first, out),
                (true, 3) => tile::<true, 3>(panel, x, first, out),
                (true, 4) => tile::<true, 4>(panel, x, first, out),
                (_, n) => unreachable!("a panel tile of {n} rows (max {TILE_ROWS})"),
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    /// `MINS`: q4_K's panel (lanes start at zero, each block's `min * dx * sum(x)` subtracted);
    /// else lanes start at the format's offset bias.
    unsafe fn tile<const MINS: bool, const R: usize>(
        panel: &Panel,
        x: &Q8Rows,
        first: usize,
        out: &mut [[f32; PANEL_ROWS]],
    ) {
        let (k, blocks) = (x.k(), x.k() / BLOCK);
        let values: [*const u8; R] =
            std::array::from_fn(|i| x.values().as_ptr().add((first + i) * k) as *const u8);
        let bias: [*const i32; R] =
            std::array::from_fn(|i| x.block_bias.as_ptr().add((first + i) * blocks));
        let scales: [*const f32; R] =
            std::array::from_fn(|i| x.scales().as_ptr().add((first + i) * blocks));
        let block_sums: [*const i32; R] =
            std::array::from_fn(|i| x.block_sums().as_ptr().add((first + i) * blocks));
        let w = panel.bytes.as_ptr();
        let mut acc = [_mm512_setzero_ps(); R];
        for b in 0..blocks {
            let mut sums: [__m512i; R] = std::array::from_fn(|i| {
                if MINS {
                    _mm512_setzero_si512()
                } else {
                    _mm512_set1_epi32(*bias[i].add(b))
                }
            });
            for g in 0..8 {
                let weights = _mm512_loadu_si512(w.add((b * 8 + g) * 64) as *const __m512i);
                for i in 0..R {
                    let four =
                        std::ptr::read_unaligned(values[i].add(b * BLOCK + 4 * g) as *const i32);
                    sums[i] = _mm512_dpbusd_epi32(sums[i], weights, _mm512_set1_epi32(four));
                }
            }
            let weight_scales = _mm512_loadu_ps(panel.scales.as_ptr().add(b * PANEL_ROWS));
            let weight_mins = _mm512_loadu_ps(panel.mins.as_ptr().add(b * PANEL_ROWS));
            for i in 0..R {
                let dx = *scales[i].add(b);
                let scale = _mm512_mul_ps(weight_scales, _mm512_set1_ps(dx));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[i]), scale, acc[i]);
                if MINS {
                    let xsum = _mm512_set1_ps(dx * *block_sums[i].add(b) as f32);
                    acc[i] = _mm512_fnmadd_ps(weight_mins, xsum, acc[i]);
                }
            }
        }
        for i in 0..R {
            _mm512_storeu_ps(out[i].as_mut_ptr(), acc[i]);
        }
    }
}
