//! The integer path for q4_0 / q8_0 weights (`int8.rs`) and `qlinear` on the CPU, which takes it.
//!
//! Tolerances:
//! - Every SIMD implementation vs the portable one: the same exact i32 block sums, scaled and added
//!   in another order: rtol 1e-5 of the sum of |terms|.
//! - Portable vs the f32 dot of the dequantised weight with the *rounded* activations: the same
//!   products, so 1e-5 relative; this pins the integer arithmetic (nibble order, the `- 8` offset).
//! - vs f32 activations on standard-normal data: relative RMS error <= 1% (rounding 32 values to
//!   their block's max / 127 steps: about 0.5% expected), and > 0.05% (it really rounds).

use kiln_runtime::{DType, Device, QuantFormat, Tensor};

use super::blocks::unpack_blocks;
use super::int8::{
    implementations, row_dot_portable, tile_implementations, Q8Rows, BLOCK, TILE_ROWS,
};
use super::int8_panel::{self, panel_dot_portable, Panel, PANEL_ROWS};
use super::*;
use crate::testing::{assert_close, rel_rms, Rng};

const FORMATS: [QuantFormat; 2] = [QuantFormat::Q4_0, QuantFormat::Q8_0];

fn packed_rows(format: QuantFormat, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let w = Rng::new(seed).normals(n * k);
    let bytes = quantize(format, &[n, k], &w).unwrap();
    let mut deq = vec![0.0; n * k];
    unpack_blocks(format, &bytes, &mut deq);
    (bytes, deq)
}

/// The activations as the integer path sees them, back in f32.
fn rounded(x: &[f32], k: usize) -> Vec<f32> {
    let q = Q8Rows::quantize(x, k, QuantFormat::Q4_0);
    let mut out = Vec::with_capacity(x.len());
    for i in 0..q.rows() {
        let row = q.row(i);
        for (b, block) in row.values().chunks_exact(BLOCK).enumerate() {
            out.extend(block.iter().map(|&v| f32::from(v) * row.scales()[b]));
        }
    }
    out
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// The sum of |a_i * b_i|: the scale the summation-order tolerances are relative to.
fn abs_dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| (a * b).abs()).sum()
}

#[test]
fn portable_dot_is_the_f32_dot_of_dequantised_weights_and_rounded_activations() {
    // K = 224 is seven blocks: no SIMD-width multiple.
    let (n, k) = (9, 224);
    for format in FORMATS {
        let (bytes, deq) = packed_rows(format, n, k, 1);
        let x = Rng::new(2).normals(2 * k);
        let xq = Q8Rows::quantize(&x, k, format);
        let xr = rounded(&x, k);
        let row_bytes = bytes.len() / n;
        for i in 0..2 {
            for r in 0..n {
                let got = row_dot_portable(format, &bytes[r * row_bytes..][..row_bytes], xq.row(i));
                let want = dot(&deq[r * k..][..k], &xr[i * k..][..k]);
                let scale = abs_dot(&deq[r * k..][..k], &xr[i * k..][..k]);
                assert!(
                    (got - want).abs() <= 1e-5 * scale,
                    "{format} row {r} x {i}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn every_simd_implementation_matches_the_portable_one() {
    let impls = implementations();
    eprintln!(
        "integer dot implementations on this CPU: {:?}",
        impls.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let (n, k) = (7, 32 * 13);
    for format in FORMATS {
        let (bytes, deq) = packed_rows(format, n, k, 3);
        // Large and tiny activations, and one all-zero block (scale 0).
        let mut x = Rng::new(4).normals(k);
        x[..BLOCK].iter_mut().for_each(|v| *v *= 1e3);
        x[BLOCK..2 * BLOCK].iter_mut().for_each(|v| *v = 0.0);
        x[2 * BLOCK..3 * BLOCK].iter_mut().for_each(|v| *v *= 1e-3);
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

#[test]
fn every_tile_implementation_matches_the_portable_row_dot() {
    let tiles = tile_implementations();
    eprintln!(
        "integer tile implementations on this CPU: {:?}",
        tiles.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    // An even and an odd number of blocks (the AVX-512 path takes blocks in pairs).
    for blocks in [6, 9] {
        let (n, k, m) = (5, 32 * blocks, 7);
        for format in FORMATS {
            let (bytes, deq) = packed_rows(format, n, k, 12);
            let mut x = Rng::new(13).normals(m * k);
            x[k..k + BLOCK].iter_mut().for_each(|v| *v = 0.0);
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
                                let xi = &x[(first + i) * k..][..k];
                                let want = row_dot_portable(format, row, xq.row(first + i));
                                let scale = abs_dot(&deq[r * k..][..k], xi);
                                assert!(
                                    (got - want).abs() <= 1e-5 * scale,
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

#[test]
fn rounding_activations_costs_under_one_percent() {
    let (n, k) = (40, 512);
    for format in FORMATS {
        let (bytes, deq) = packed_rows(format, n, k, 5);
        let x = Rng::new(6).normals(3 * k);
        let xq = Q8Rows::quantize(&x, k, format);
        let row_bytes = bytes.len() / n;
        let dot_fn = super::int8::row_dot_for_this_cpu();
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for i in 0..3 {
            for r in 0..n {
                got.push(dot_fn(
                    format,
                    &bytes[r * row_bytes..][..row_bytes],
                    xq.row(i),
                ));
                want.push(dot(&deq[r * k..][..k], &x[i * k..][..k]));
            }
        }
        let e = rel_rms(&got, &want);
        assert!(e <= 0.01 && e > 5e-4, "{format}: relative RMS error {e}");
    }
}

#[test]
fn cpu_qlinear_takes_the_integer_path_for_every_row_count() {
    // N = 70 spans the decode path's 16-row and the batched path's 32-row chunks unevenly; 5
    // input rows take the row dots (a batch of decode steps), 40 the panels (a prompt).
    let (n, k) = (70, 96);
    let mut rng = Rng::new(9);
    let w = Tensor::from_f32(&Device::Cpu, &[n, k], DType::F32, &rng.normals(n * k)).unwrap();
    let bias = Tensor::from_f32(&Device::Cpu, &[n], DType::F32, &rng.normals(n)).unwrap();
    for m in [5, int8_panel::MIN_ROWS + 8] {
        let xv = rng.normals(m * k);
        for format in FORMATS {
            let q = quantize_tensor(&w, format, &Device::Cpu).unwrap();
            let x = Tensor::from_f32(&Device::Cpu, &[m, k], DType::F32, &xv).unwrap();
            let batched = qlinear(&x, &q, Some(&bias)).unwrap().to_vec_f32().unwrap();
            let exact = cpu::qlinear_exact(&x, &q, Some(&bias), m, &[m, n])
                .unwrap()
                .to_vec_f32()
                .unwrap();
            let e = rel_rms(&batched, &exact);
            assert!(
                e <= 0.01 && e > 5e-4,
                "{format} m {m}: relative RMS error {e}"
            );
            // One row alone gives that row of the batch: the same exact i32 block sums, scaled
            // and added in another order where the batch takes the panel path.
            for i in [0, 4, m - 1] {
                let x1 = Tensor::from_f32(&Device::Cpu, &[1, 1, k], DType::F32, &xv[i * k..][..k])
                    .unwrap();
                let one = qlinear(&x1, &q, Some(&bias)).unwrap();
                assert_eq!(one.shape(), &[1, 1, n]);
                assert_close(
                    &format!("{format} m {m} row {i}"),
                    &one.to_vec_f32().unwrap(),
                    &batched[i * n..][..n],
                    1e-5 * (k as f32).sqrt(),
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn the_panel_path_matches_the_portable_row_dot() {
    let fast = int8_panel::panel_dot_for_this_cpu();
    eprintln!("panel kernel on this CPU: {}", fast.is_some());
    for blocks in [6, 9] {
        let k = 32 * blocks;
        // 5 rows (a partial panel), 16 (a full one), 37 (two full and a partial).
        for n in [5, 16, 37] {
            let m = 7;
            for format in FORMATS {
                let (bytes, deq) = packed_rows(format, n, k, 30 + n as u64);
                let x = Rng::new(31).normals(m * k);
                let xq = Q8Rows::quantize(&x, k, format);
                let row_bytes = bytes.len() / n;
                let mut panel = Panel::new(k);
                for (p, chunk) in bytes.chunks(PANEL_ROWS * row_bytes).enumerate() {
                    panel.repack(format, chunk, row_bytes);
                    assert_eq!(panel.rows(), chunk.len() / row_bytes);
                    for tile in 1..=int8_panel::TILE_ROWS {
                        for first in [0, m - tile] {
                            let mut impls =
                                vec![("portable", panel_dot_portable as int8_panel::PanelDot)];
                            impls.extend(fast.map(|f| ("avx512", f)));
                            for (name, f) in impls {
                                let mut got = vec![[f32::NAN; PANEL_ROWS]; tile];
                                f(&panel, &xq, first, &mut got);
                                for (i, got) in got.iter().enumerate() {
                                    for (r, &got) in got.iter().enumerate().take(panel.rows()) {
                                        let w = p * PANEL_ROWS + r;
                                        let row = &bytes[w * row_bytes..][..row_bytes];
                                        let want = row_dot_portable(format, row, xq.row(first + i));
                                        let xi = &x[(first + i) * k..][..k];
                                        let scale = abs_dot(&deq[w * k..][..k], xi);
                                        assert!(
                                            (got - want).abs() <= 1e-5 * scale,
                                            "{format} {name} K {k} N {n} row {w} tile {tile} at {first}+{i}: \
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
    }
}
