//! The integer paths for the ggml formats kiln reads from GGUF files (`int8_kquants.rs`: q2_K ..
//! q6_K; `int8_legacy.rs`: q4_1, q5_0, q5_1) and `qlinear` on the CPU, which takes them.
//!
//! Tolerances (as `int8_tests.rs`):
//! - Portable vs the f32 dot of the dequantised weight with the *rounded* activations: the same
//!   products, so 1e-5 of the sum of |terms|; this pins the integer arithmetic (code layout,
//!   sub-block scales and mins, the high bits, q3_K's `- 4`, q6_K's `- 32`, q5_0's `- 16`).
//! - Every SIMD implementation vs the portable one: the same exact i32 chunk sums, scaled and added
//!   in another order: 1e-5 of the sum of |terms|.
//! - `qlinear` vs `qlinear_exact` (f32 activations) on standard-normal activations: relative RMS
//!   error <= 1% and > 0.05% (it really rounds).

use kiln_runtime::{DType, Device, QuantFormat, Tensor};

use super::blocks::unpack_blocks;
use super::ggml_tests::random_blocks;
use super::int8::{
    implementations, row_dot_portable, tile_implementations, Q8Rows, BLOCK, TILE_ROWS,
};
use super::*;
use crate::testing::{rel_rms, Rng};

const FORMATS: [QuantFormat; 8] = [
    QuantFormat::Q2K,
    QuantFormat::Q3K,
    QuantFormat::Q4K,
    QuantFormat::Q5K,
    QuantFormat::Q6K,
    QuantFormat::Q4_1,
    QuantFormat::Q5_0,
    QuantFormat::Q5_1,
];

/// Packed rows (random codes and sub-block scales, small f16 scales) and their f32 values.
fn packed_rows(format: QuantFormat, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let bytes = random_blocks(format, n, k, seed).to_packed_bytes().unwrap();
    let mut deq = vec![0.0; n * k];
    unpack_blocks(format, &bytes, &mut deq);
    (bytes, deq)
}

/// The activations as the integer path sees them, back in f32.
fn rounded(x: &[f32], k: usize, format: QuantFormat) -> Vec<f32> {
    let q = Q8Rows::quantize(x, k, format);
    let mut out = Vec::with_capacity(x.len());
    for i in 0..q.rows() {
        let row = q.row(i);
        for (b, block) in row.values().chunks_exact(BLOCK).enumerate() {
            out.extend(block.iter().map(|&v| f32::from(v) * row.scales()[b]));
        }
    }
    out
}

fn abs_dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| (a * b).abs()).sum()
}

/// Activations with a large, an all-zero and a tiny 32-value block.
fn activations(k: usize, seed: u64) -> Vec<f32> {
    let mut x = Rng::new(seed).normals(k);
    x[..BLOCK].iter_mut().for_each(|v| *v *= 1e3);
    x[BLOCK..2 * BLOCK].iter_mut().for_each(|v| *v = 0.0);
    x[2 * BLOCK..3 * BLOCK].iter_mut().for_each(|v| *v *= 1e-3);
    x
}

#[test]
fn portable_dot_is_the_f32_dot_of_dequantised_weights_and_rounded_activations() {
    let (n, k) = (5, 768);
    for format in FORMATS {
        let (bytes, deq) = packed_rows(format, n, k, 1);
        let x = activations(k, 2);
        let xq = Q8Rows::quantize(&x, k, format);
        let xr = rounded(&x, k, format);
        let row_bytes = bytes.len() / n;
        for r in 0..n {
            let w = &deq[r * k..][..k];
            let got = row_dot_portable(format, &bytes[r * row_bytes..][..row_bytes], xq.row(0));
            let want: f32 = w.iter().zip(&xr).map(|(a, b)| a * b).sum();
            assert!(
                (got - want).abs() <= 1e-5 * abs_dot(w, &xr),
                "{format} row {r}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn every_simd_implementation_matches_the_portable_one() {
    let impls = implementations();
    let (n, k) = (7, 512);
    for format in FORMATS {
        let (bytes, deq) = packed_rows(format, n, k, 3);
        let x = activations(k, 4);
        let xq = Q8Rows::quantize(&x, k, format);
        let row_bytes = bytes.len() / n;
        for r in 0..n {
            let row = &bytes[r * row_bytes..][..row_bytes];
            let want = row_dot_portable(format, row, xq.row(0));
            let scale = abs_dot(&deq[r * k..][..k], &x);
            for (name, f) in &impls {
                let got = f(format, row, xq.row(0));
                assert!(
                    got.is_finite() && (got - want).abs() <= 1e-5 * scale,
                    "{format} {name} row {r}: {got} vs portable {want}"
                );
            }
        }
    }
}

/// The tiles (up to 4 input rows against one weight row; AVX-512 VNNI for q4_K and q6_K, the
/// formats of Q4_K_M files) against the portable row dot, with odd block counts.
#[test]
fn every_tile_implementation_matches_the_portable_row_dot() {
    let tiles = tile_implementations();
    for format in [QuantFormat::Q4K, QuantFormat::Q6K] {
        for blocks in [1, 3] {
            let (n, k, m) = (5, 256 * blocks, 6);
            let (bytes, deq) = packed_rows(format, n, k, 21);
            let mut x: Vec<f32> = (0..m as u64).flat_map(|i| activations(k, 22 + i)).collect();
            x[2 * k + BLOCK..2 * k + 2 * BLOCK]
                .iter_mut()
                .for_each(|v| *v = 0.0);
            let xq = Q8Rows::quantize(&x, k, format);
            let row_bytes = bytes.len() / n;
            for r in 0..n {
                let row = &bytes[r * row_bytes..][..row_bytes];
                for (name, f) in &tiles {
                    for tile in 1..=TILE_ROWS {
                        for first in [0, m - tile] {
                            let mut got = vec![f32::NAN; tile];
                            f(format, row, &xq, first, &mut got);
                            for (i, got) in got.iter().enumerate() {
                                let want = row_dot_portable(format, row, xq.row(first + i));
                                let scale = abs_dot(&deq[r * k..][..k], &x[(first + i) * k..][..k]);
                                assert!(
                                    got.is_finite() && (got - want).abs() <= 1e-5 * scale,
                                    "{format} {name} K {k} row {r} tile {tile} at {first}+{i}: \
                                     {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// q4_K's panel (prefill on AVX-512 VNNI): every tile of every panel against the portable row
/// dot, for a partial, a full and a two-and-a-bit panel.
#[test]
fn the_q4_k_panel_matches_the_portable_row_dot() {
    use super::int8_panel::{self, panel_dot_portable, Panel, PANEL_ROWS};
    let format = QuantFormat::Q4K;
    let fast = int8_panel::panel_dot_for_this_cpu();
    for n in [5, 16, 37] {
        let (k, m) = (512, 7);
        let (bytes, deq) = packed_rows(format, n, k, 40 + n as u64);
        let x: Vec<f32> = (0..m as u64).flat_map(|i| activations(k, 41 + i)).collect();
        let xq = Q8Rows::quantize(&x, k, format);
        let row_bytes = bytes.len() / n;
        let mut panel = Panel::new(k);
        for (p, chunk) in bytes.chunks(PANEL_ROWS * row_bytes).enumerate() {
            panel.repack(format, chunk, row_bytes);
            let mut impls = vec![("portable", panel_dot_portable as int8_panel::PanelDot)];
            impls.extend(fast.map(|f| ("avx512", f)));
            for (name, f) in impls {
                for tile in 1..=int8_panel::TILE_ROWS {
                    let first = m - tile;
                    let mut got = vec![[f32::NAN; PANEL_ROWS]; tile];
                    f(&panel, &xq, first, &mut got);
                    for (i, got) in got.iter().enumerate() {
                        for (r, &got) in got.iter().enumerate().take(panel.rows()) {
                            let w = p * PANEL_ROWS + r;
                            let row = &bytes[w * row_bytes..][..row_bytes];
                            let want = row_dot_portable(format, row, xq.row(first + i));
                            let scale = abs_dot(&deq[w * k..][..k], &x[(first + i) * k..][..k]);
                            assert!(
                                (got - want).abs() <= 1e-5 * scale,
                                "{name} N {n} row {w} tile {tile}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn cpu_qlinear_takes_the_integer_path_within_one_percent() {
    let (n, k) = (37, 1024);
    for format in FORMATS {
        let q = random_blocks(format, n, k, 5);
        // 1 (decode), 3 and 31 rows: the integer path (from 32 rows the f32 GEMM is faster, but
        // for the AVX-512 tiles of q4_K and q6_K, which take any number of rows).
        let wide = super::int8::has_wide_tiles(format);
        for m in [1, 3, 31, 40].into_iter().filter(|&m| m < 32 || wide) {
            let mut rng = Rng::new(6 + m as u64);
            let x =
                Tensor::from_f32(&Device::Cpu, &[m, k], DType::F32, &rng.normals(m * k)).unwrap();
            let b = Tensor::from_f32(&Device::Cpu, &[n], DType::F32, &rng.normals(n)).unwrap();
            let got = qlinear(&x, &q, Some(&b)).unwrap().to_vec_f32().unwrap();
            let want = cpu::qlinear_exact(&x, &q, Some(&b), m, &[m, n])
                .unwrap()
                .to_vec_f32()
                .unwrap();
            let e = rel_rms(&got, &want);
            assert!(
                e <= 0.01 && e > 5e-4,
                "{format} m {m}: relative RMS error {e}"
            );
        }
    }
}
