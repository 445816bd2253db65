//! Timestep embedding: the CPU against closed forms (t = 0, hand-computed values at t = 999 for SD 1.5's
//! settings, an f64 evaluation of the definition), the GPU against the CPU.
//!
//! Tolerances: angles reach scale * t (~1000 here) and are f32, good to ~|angle| * 1e-7, so f32
//! comparisons use atol 1e-5 + 2.5e-7 * max|angle| (2.6e-4 at t = 999); f16 uses the default 2e-2 abs
//! + 1e-2 rel.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{assert_close, tolerance, with_gpu, Rng};

fn times(dtype: DType, values: &[f32]) -> Tensor {
    Tensor::from_f32(&Device::Cpu, &[values.len()], dtype, values).unwrap()
}

/// The definition evaluated in f64.
fn naive(ts: &[f32], cfg: &TimestepEmbedding) -> Vec<f32> {
    let half = cfg.dim / 2;
    let mut out = Vec::new();
    for &t in ts {
        let mut row = vec![0.0; cfg.dim];
        for j in 0..half {
            let exponent = -(cfg.max_period as f64).ln() * j as f64
                / (half as f64 - cfg.downscale_freq_shift as f64);
            let a = cfg.scale as f64 * t as f64 * exponent.exp();
            let (first, second) = if cfg.flip_sin_to_cos {
                (a.cos(), a.sin())
            } else {
                (a.sin(), a.cos())
            };
            row[j] = first as f32;
            row[half + j] = second as f32;
        }
        out.extend(row);
    }
    out
}

fn f32_atol(max_angle: f32) -> f32 {
    1e-5 + 2.5e-7 * max_angle
}

#[test]
fn cpu_t_zero_is_sin_zeros_then_cos_ones() {
    let mut cfg = TimestepEmbedding::sd15();
    cfg.flip_sin_to_cos = false;
    let out = timestep_embedding(&times(DType::F32, &[0.0]), &cfg).unwrap();
    assert_eq!(out.shape(), [1, 320]);
    let want: Vec<f32> = (0..320).map(|c| if c < 160 { 0.0 } else { 1.0 }).collect();
    assert_eq!(out.to_vec_f32().unwrap(), want);
    // Flipped: cos first.
    let out = timestep_embedding(&times(DType::F32, &[0.0]), &TimestepEmbedding::sd15()).unwrap();
    let want: Vec<f32> = (0..320).map(|c| if c < 160 { 1.0 } else { 0.0 }).collect();
    assert_eq!(out.to_vec_f32().unwrap(), want);
}

#[test]
fn cpu_sd15_at_t_999_matches_hand_computed_values() {
    let cfg = TimestepEmbedding::sd15();
    let out = timestep_embedding(&times(DType::F32, &[999.0]), &cfg).unwrap();
    let got = out.to_vec_f32().unwrap();
    // freq_j = exp(-ln(10000) j / 160); angle_j = 999 freq_j; values from Python's math in f64:
    // j = 0: angle 999; j = 1: 943.1168; j = 80: 9.99; j = 159: 0.105819.
    let at = [0, 1, 80, 159, 160, 161, 240, 319].map(|c| got[c]);
    let want: [f64; 8] = [
        0.999_649_853,  // cos(999)
        0.802_681_022,  // cos(943.1168)
        -0.844_469_696, // cos(9.99)
        0.994_406_345,  // cos(0.105819)
        -0.026_460_753, // sin(999)
        0.596_408_565,  // sin(943.1168)
        -0.535_603_335, // sin(9.99)
        0.105_622_068,  // sin(0.105819)
    ];
    let want = want.map(|v| v as f32);
    assert_close("sd15 t=999", &at, &want, f32_atol(999.0), 0.0);
    assert_close(
        "sd15 t=999 row",
        &got,
        &naive(&[999.0], &cfg),
        f32_atol(999.0),
        0.0,
    );
}

#[test]
fn cpu_odd_width_shift_and_scale_follow_the_definition() {
    let cfg = TimestepEmbedding {
        dim: 7,
        flip_sin_to_cos: false,
        downscale_freq_shift: 1.0,
        scale: 2.0,
        max_period: 10000.0,
    };
    let ts = [0.5, 3.0, 41.0];
    let got = timestep_embedding(&times(DType::F32, &ts), &cfg).unwrap();
    assert_eq!(got.shape(), [3, 7]);
    let got = got.to_vec_f32().unwrap();
    for row in got.chunks(7) {
        assert_eq!(row[6], 0.0, "the padding column");
    }
    assert_close("odd width", &got, &naive(&ts, &cfg), f32_atol(82.0), 0.0);
}

#[test]
fn gpu_matches_cpu() {
    with_gpu(|gpu| {
        let odd = TimestepEmbedding {
            dim: 7,
            flip_sin_to_cos: false,
            downscale_freq_shift: 1.0,
            scale: 1.0,
            max_period: 10000.0,
        };
        let wide = TimestepEmbedding {
            dim: 1281,
            scale: 0.5,
            ..TimestepEmbedding::sd15()
        };
        // One timestep, a batch for SD 1.5, an odd width with a shift, a large odd width.
        let cases = [
            (1, TimestepEmbedding::sd15()),
            (3, TimestepEmbedding::sd15()),
            (5, odd),
            (2, wide),
        ];
        for dtype in [DType::F32, DType::F16] {
            for (i, (n, cfg)) in cases.iter().enumerate() {
                let mut rng = Rng::new(400 + i as u64);
                let mut ts: Vec<f32> = (0..*n).map(|_| (rng.uniform() * 1000.0).floor()).collect();
                ts[0] = 999.0;
                let cpu_t = times(dtype, &ts);
                let want = timestep_embedding(&cpu_t, cfg).unwrap();
                let got = timestep_embedding(&cpu_t.to_device(gpu).unwrap(), cfg).unwrap();
                assert_eq!(got.shape(), [*n, cfg.dim]);
                assert_eq!(got.dtype(), dtype);
                let (atol, rtol) = match dtype {
                    DType::F32 => (f32_atol(999.0 * cfg.scale), 0.0),
                    _ => tolerance(dtype),
                };
                assert_close(
                    &format!("timestep {dtype} n={n} {cfg:?}"),
                    &got.to_vec_f32().unwrap(),
                    &want.to_vec_f32().unwrap(),
                    atol,
                    rtol,
                );
            }
        }
    });
}

#[test]
fn bad_inputs_are_errors() {
    let cfg = TimestepEmbedding::sd15();
    let t2 = Tensor::from_f32(&Device::Cpu, &[2, 1], DType::F32, &[1.0, 2.0]).unwrap();
    let err = timestep_embedding(&t2, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("timestep_embedding") && err.contains("rank 1") && err.contains("[2, 1]"),
        "{err}"
    );
    let ids = Tensor::from_u32(&Device::Cpu, &[2], &[1, 2]).unwrap();
    let err = timestep_embedding(&ids, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("timestep_embedding") && err.contains("u32"),
        "{err}"
    );
    let empty = times(DType::F32, &[]);
    let err = timestep_embedding(&empty, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("timestep_embedding") && err.contains("zero-size"),
        "{err}"
    );
    let t = times(DType::F32, &[1.0]);
    let narrow = TimestepEmbedding { dim: 1, ..cfg };
    let err = timestep_embedding(&t, &narrow).unwrap_err().to_string();
    assert!(
        err.contains("timestep_embedding") && err.contains("dim >= 2"),
        "{err}"
    );
    let degenerate = TimestepEmbedding {
        dim: 2,
        downscale_freq_shift: 1.0,
        ..cfg
    };
    assert!(timestep_embedding(&t, &degenerate).is_err());
}
