//! GPU normalisation kernels against the CPU reference, and the CPU reference against a naive loop and
//! closed forms.
//!
//! Tolerances: f32 1e-4 absolute + 1e-4 relative, f16 2e-2 + 1e-2 (`testing::tolerance`); the CPU
//! reference against the naive f64 loop and closed forms 1e-5.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{assert_close, assert_tensors_close, random_pair, with_gpu, Rng};

const DTYPES: [DType; 2] = [DType::F32, DType::F16];
const EPS: f32 = 1e-5;

fn cpu(shape: &[usize], values: &[f32]) -> Tensor {
    Tensor::from_f32(&Device::Cpu, shape, DType::F32, values).unwrap()
}

/// A CPU tensor and its GPU copy of `values`, rounded to `dtype` first so both sides see the same.
fn pair(gpu: &Device, shape: &[usize], dtype: DType, values: &[f32]) -> (Tensor, Tensor) {
    let c = Tensor::from_f32(&Device::Cpu, shape, dtype, values).unwrap();
    let g = c.to_device(gpu).unwrap();
    (c, g)
}

/// GroupNorm by its definition, walking (n, c, s) coordinates rather than contiguous rows.
fn naive_group_norm(
    x: &[f32],
    shape: &[usize],
    groups: usize,
    affine: Option<(&[f32], &[f32])>,
    silu: bool,
) -> Vec<f32> {
    let (n, c) = (shape[0], shape[1]);
    let s: usize = shape[2..].iter().product();
    let cpg = c / groups;
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for g in 0..groups {
            let idx: Vec<usize> = (g * cpg..(g + 1) * cpg)
                .flat_map(|ch| (0..s).map(move |p| (b * c + ch) * s + p))
                .collect();
            let count = idx.len() as f64;
            let mean = idx.iter().map(|&i| x[i] as f64).sum::<f64>() / count;
            let var = idx
                .iter()
                .map(|&i| (x[i] as f64 - mean).powi(2))
                .sum::<f64>()
                / count;
            for &i in &idx {
                let ch = (i / s) % c;
                let mut y = (x[i] as f64 - mean) / (var + EPS as f64).sqrt();
                if let Some((w, bias)) = affine {
                    y = y * w[ch] as f64 + bias[ch] as f64;
                }
                if silu {
                    y /= 1.0 + (-y).exp();
                }
                out[i] = y as f32;
            }
        }
    }
    out
}

#[test]
fn cpu_group_norm_matches_naive_loop() {
    let shape = [2, 12, 5, 3];
    let x = Rng::new(1).normals(2 * 12 * 15);
    let w = Rng::new(2).normals(12);
    let b = Rng::new(3).normals(12);
    let (xt, wt, bt) = (cpu(&shape, &x), cpu(&[12], &w), cpu(&[12], &b));
    for groups in [1, 3, 12] {
        for silu in [false, true] {
            let got = group_norm(&xt, groups, Some(&wt), Some(&bt), EPS, silu).unwrap();
            let want = naive_group_norm(&x, &shape, groups, Some((&w, &b)), silu);
            let what = format!("groups={groups} silu={silu}");
            assert_close(&what, &got.to_vec_f32().unwrap(), &want, 1e-5, 1e-5);
        }
    }
}

#[test]
fn cpu_group_norm_groups_have_zero_mean_and_unit_variance() {
    // Shifted far from zero, so a one-pass variance in f32 would be visibly wrong.
    let x: Vec<f32> = Rng::new(4)
        .normals(2 * 8 * 49)
        .iter()
        .map(|v| 1000.0 + 3.0 * v)
        .collect();
    let y = group_norm(&cpu(&[2, 8, 7, 7], &x), 4, None, None, 0.0, false)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    for group in y.chunks(2 * 49) {
        let n = group.len() as f64;
        let mean = group.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = group.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n - mean * mean;
        assert_close("group mean", &[mean as f32], &[0.0], 1e-5, 0.0);
        assert_close("group variance", &[var as f32], &[1.0], 1e-5, 0.0);
    }
}

#[test]
fn cpu_layer_and_rms_norm_match_closed_forms() {
    let x = cpu(&[1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let w = cpu(&[4], &[1.0, 2.0, 0.5, -1.0]);
    let b = cpu(&[4], &[0.0, 1.0, 0.0, 2.0]);
    // mean 2.5, variance 1.25
    let r = 1.0 / (1.25f32 + EPS).sqrt();
    let got = layer_norm(&x, Some(&w), Some(&b), EPS).unwrap();
    let want = [
        -1.5 * r,
        -0.5 * r * 2.0 + 1.0,
        0.5 * r * 0.5,
        -1.5 * r + 2.0,
    ];
    assert_close("layer_norm", &got.to_vec_f32().unwrap(), &want, 1e-5, 1e-5);
    // mean square (1 + 4 + 9 + 16) / 4 = 7.5
    let r = 1.0 / (7.5f32 + EPS).sqrt();
    let got = rms_norm(&x, &w, EPS).unwrap();
    let want = [r, 4.0 * r, 1.5 * r, -4.0 * r];
    assert_close("rms_norm", &got.to_vec_f32().unwrap(), &want, 1e-5, 1e-5);
    // LayerNorm is GroupNorm with one group over [rows, width].
    let x = cpu(&[3, 4], &Rng::new(5).normals(12));
    let ln = layer_norm(&x, Some(&w), Some(&b), EPS).unwrap();
    let gn = group_norm(&x, 1, Some(&w), Some(&b), EPS, false).unwrap();
    assert_eq!(ln.to_vec_f32().unwrap(), gn.to_vec_f32().unwrap());
}

#[test]
fn gpu_group_norm_matches_cpu() {
    with_gpu(|gpu| {
        for dtype in DTYPES {
            let shape = [2, 32, 7, 9];
            let (cx, gx) = random_pair(gpu, &shape, dtype, 10);
            let (cw, gw) = random_pair(gpu, &[32], dtype, 11);
            let (cb, gb) = random_pair(gpu, &[32], dtype, 12);
            for groups in [32, 8] {
                // (weight, bias, silu): none, both, both + SiLU, SiLU only, weight only.
                for (w, b, silu) in [
                    (false, false, false),
                    (true, true, false),
                    (true, true, true),
                    (false, false, true),
                    (true, false, false),
                ] {
                    let want =
                        group_norm(&cx, groups, w.then_some(&cw), b.then_some(&cb), EPS, silu)
                            .unwrap();
                    let got =
                        group_norm(&gx, groups, w.then_some(&gw), b.then_some(&gb), EPS, silu)
                            .unwrap();
                    let what = format!("{dtype} groups={groups} w={w} b={b} silu={silu}");
                    assert_tensors_close(&what, &got, &want);
                }
            }
            // One channel per group and one position: every group is 2 elements; and no spatial dims.
            let (cw, gw) = random_pair(gpu, &[64], dtype, 13);
            for shape in [&[2, 64, 1, 1][..], &[2, 64]] {
                let (cx, gx) = random_pair(gpu, shape, dtype, 14);
                let want = group_norm(&cx, 32, Some(&cw), None, EPS, true).unwrap();
                let got = group_norm(&gx, 32, Some(&gw), None, EPS, true).unwrap();
                assert_tensors_close(&format!("{dtype} {shape:?}"), &got, &want);
            }
        }
    });
}

#[test]
fn gpu_group_norm_large_groups_and_large_means() {
    with_gpu(|gpu| {
        for dtype in DTYPES {
            // 4096 elements per group (one workgroup each) and 16384 (the split path).
            let shape = [2, 32, 64, 64];
            let n = 2 * 32 * 64 * 64;
            let base = Rng::new(20).normals(n);
            let (cw, gw) = random_pair(gpu, &[32], dtype, 21);
            let (cb, gb) = random_pair(gpu, &[32], dtype, 22);
            for offset in [0.0, 1000.0] {
                let values: Vec<f32> = base.iter().map(|v| v + offset).collect();
                let (cx, gx) = pair(gpu, &shape, dtype, &values);
                for groups in [32, 8] {
                    let want = group_norm(&cx, groups, Some(&cw), Some(&cb), EPS, true).unwrap();
                    let got = group_norm(&gx, groups, Some(&gw), Some(&gb), EPS, true).unwrap();
                    let what = format!("{dtype} {shape:?} + {offset} groups={groups}");
                    assert_tensors_close(&what, &got, &want);
                }
            }
        }
    });
}

#[test]
fn gpu_split_path_matches_cpu_on_uneven_chunks() {
    with_gpu(|gpu| {
        let ctx = common::gpu(gpu).unwrap();
        for dtype in DTYPES {
            let values: Vec<f32> = Rng::new(30)
                .normals(2 * 32 * 63)
                .iter()
                .map(|v| v + 1000.0)
                .collect();
            let (cx, gx) = pair(gpu, &[2, 32, 7, 9], dtype, &values);
            let (cb, gb) = random_pair(gpu, &[32], dtype, 31);
            let want = group_norm(&cx, 8, None, Some(&cb), EPS, false).unwrap();
            // 252 elements per group in chunks of 100, 100 and 52; and chunks of one element.
            for chunk in [100, 1] {
                let rows = group_rows(&gx, 8, None, Some(&gb), EPS, false).unwrap();
                let got = launch(ctx, &rows, Some(chunk)).unwrap();
                assert_tensors_close(&format!("{dtype} chunk={chunk}"), &got, &want);
            }
        }
    });
}

#[test]
fn gpu_layer_and_rms_norm_match_cpu() {
    with_gpu(|gpu| {
        for dtype in DTYPES {
            for rows in [1, 77] {
                for width in [1, 33, 320, 1000] {
                    let (cx, gx) = random_pair(gpu, &[rows, width], dtype, 40 + width as u64);
                    let (cw, gw) = random_pair(gpu, &[width], dtype, 41);
                    let (cb, gb) = random_pair(gpu, &[width], dtype, 42);
                    let what = format!("{dtype} [{rows}, {width}]");
                    let want = layer_norm(&cx, Some(&cw), Some(&cb), EPS).unwrap();
                    let got = layer_norm(&gx, Some(&gw), Some(&gb), EPS).unwrap();
                    assert_tensors_close(&format!("layer_norm {what}"), &got, &want);
                    let want = layer_norm(&cx, None, None, EPS).unwrap();
                    let got = layer_norm(&gx, None, None, EPS).unwrap();
                    assert_tensors_close(&format!("layer_norm no affine {what}"), &got, &want);
                    let want = rms_norm(&cx, &cw, EPS).unwrap();
                    let got = rms_norm(&gx, &gw, EPS).unwrap();
                    assert_tensors_close(&format!("rms_norm {what}"), &got, &want);
                }
            }
            // Rank 3 with a large mean, and a row wider than several workgroup strides.
            for (shape, offset) in [([2, 3, 33], 1000.0), ([1, 3, 5000], 0.0)] {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = Rng::new(43).normals(n).iter().map(|v| v + offset).collect();
                let (cx, gx) = pair(gpu, &shape, dtype, &values);
                let (cw, gw) = random_pair(gpu, &shape[2..], dtype, 44);
                let what = format!("{dtype} {shape:?} + {offset}");
                let want = layer_norm(&cx, Some(&cw), None, EPS).unwrap();
                let got = layer_norm(&gx, Some(&gw), None, EPS).unwrap();
                assert_tensors_close(&format!("layer_norm {what}"), &got, &want);
                let want = rms_norm(&cx, &cw, EPS).unwrap();
                let got = rms_norm(&gx, &gw, EPS).unwrap();
                assert_tensors_close(&format!("rms_norm {what}"), &got, &want);
            }
        }
    });
}

#[test]
fn bad_inputs_are_errors() {
    let x = cpu(&[2, 30, 4], &[0.0; 240]);
    let w30 = cpu(&[30], &[1.0; 30]);
    let err = group_norm(&x, 8, None, None, EPS, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("group_norm") && err.contains("[2, 30, 4]") && err.contains("8 groups"),
        "{err}"
    );
    let err = group_norm(&x, 0, None, None, EPS, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("group_norm") && err.contains("0 groups"),
        "{err}"
    );
    let w = cpu(&[10], &[1.0; 10]);
    let err = group_norm(&x, 10, Some(&w), None, EPS, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("group_norm") && err.contains("`weight`") && err.contains("[10]"),
        "{err}"
    );
    let err = group_norm(&x, 10, Some(&w30), Some(&w), EPS, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`bias`") && err.contains("[30]"), "{err}");
    let flat = cpu(&[30], &[0.0; 30]);
    let err = group_norm(&flat, 1, None, None, EPS, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("group_norm") && err.contains("[30]") && err.contains("rank"),
        "{err}"
    );
    let w16 = Tensor::from_f32(&Device::Cpu, &[30], DType::F16, &[1.0; 30]).unwrap();
    let err = group_norm(&x, 10, Some(&w16), None, EPS, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("group_norm") && err.contains("f16"), "{err}");
    let empty = cpu(&[0, 30, 4], &[]);
    let err = group_norm(&empty, 10, None, None, EPS, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("group_norm") && err.contains("zero-size"),
        "{err}"
    );

    let err = layer_norm(&x, Some(&w), None, EPS).unwrap_err().to_string();
    assert!(
        err.contains("layer_norm") && err.contains("[4]") && err.contains("[10]"),
        "{err}"
    );
    let scalar = cpu(&[], &[1.0]);
    let err = layer_norm(&scalar, None, None, EPS)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer_norm") && err.contains("scalar"),
        "{err}"
    );
    let err = rms_norm(&x, &w16, EPS).unwrap_err().to_string();
    assert!(err.contains("rms_norm") && err.contains("f16"), "{err}");
    let err = rms_norm(&cpu(&[2, 0], &[]), &cpu(&[0], &[]), EPS)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rms_norm") && err.contains("zero-size"),
        "{err}"
    );
    let ids = Tensor::from_u32(&Device::Cpu, &[2, 4], &[0; 8]).unwrap();
    let err = rms_norm(&ids, &cpu(&[4], &[1.0; 4]), EPS)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rms_norm") && err.contains("u32"), "{err}");
}

#[test]
fn tensors_on_different_devices_are_an_error() {
    with_gpu(|gpu| {
        let (cx, _) = random_pair(gpu, &[2, 4], DType::F32, 1);
        let (_, gw) = random_pair(gpu, &[4], DType::F32, 2);
        let err = layer_norm(&cx, Some(&gw), None, EPS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer_norm") && err.contains("cpu"), "{err}");
    });
}

#[test]
fn cpu_add_rms_norm_is_add_then_rms_norm_exactly() {
    for dtype in DTYPES {
        let shape = [3, 2, 37];
        let values = |seed| Rng::new(seed).normals(3 * 2 * 37);
        let x = Tensor::from_f32(&Device::Cpu, &shape, dtype, &values(60)).unwrap();
        let r = Tensor::from_f32(&Device::Cpu, &shape, dtype, &values(61)).unwrap();
        let w = Tensor::from_f32(&Device::Cpu, &[37], dtype, &values(62)[..37]).unwrap();
        let (sum, normed) = add_rms_norm(&x, &r, &w, EPS).unwrap();
        let want_sum = crate::elementwise::add(&x, &r).unwrap();
        assert_eq!(sum.shape(), shape);
        assert_eq!(sum.dtype(), dtype);
        assert_eq!(
            sum.to_bytes().unwrap(),
            want_sum.to_bytes().unwrap(),
            "{dtype} sum"
        );
        let want = rms_norm(&want_sum, &w, EPS).unwrap();
        assert_eq!(
            normed.to_bytes().unwrap(),
            want.to_bytes().unwrap(),
            "{dtype} norm"
        );
    }
}

#[test]
fn gpu_add_rms_norm_matches_cpu() {
    with_gpu(|gpu| {
        for dtype in DTYPES {
            // One element per row, a row under one workgroup stride, one over several.
            for shape in [[4usize, 1], [5, 33], [2, 1000]] {
                let (cx, gx) = random_pair(gpu, &shape, dtype, 70);
                let (cr, gr) = random_pair(gpu, &shape, dtype, 71);
                let (cw, gw) = random_pair(gpu, &shape[1..], dtype, 72);
                let what = format!("add_rms_norm {dtype} {shape:?}");
                let (want_sum, want) = add_rms_norm(&cx, &cr, &cw, EPS).unwrap();
                let (sum, got) = add_rms_norm(&gx, &gr, &gw, EPS).unwrap();
                assert_tensors_close(&format!("{what} sum"), &sum, &want_sum);
                assert_tensors_close(&what, &got, &want);
                // And the two-op GPU form, which performs the same arithmetic.
                let two = rms_norm(&crate::elementwise::add(&gx, &gr).unwrap(), &gw, EPS).unwrap();
                assert_tensors_close(&format!("{what} vs add + rms_norm"), &got, &two);
            }
        }
    });
}

#[test]
fn add_rms_norm_bad_inputs_are_errors() {
    let x = cpu(&[2, 4], &[0.0; 8]);
    let w = cpu(&[4], &[1.0; 4]);
    let r = cpu(&[4, 2], &[0.0; 8]);
    let err = add_rms_norm(&x, &r, &w, EPS).unwrap_err().to_string();
    assert!(
        err.contains("add_rms_norm") && err.contains("[2, 4]") && err.contains("[4, 2]"),
        "{err}"
    );
    let w3 = cpu(&[3], &[1.0; 3]);
    let err = add_rms_norm(&x, &x, &w3, EPS).unwrap_err().to_string();
    assert!(err.contains("weight") && err.contains("[3]"), "{err}");
    let h = Tensor::from_f32(&Device::Cpu, &[2, 4], DType::F16, &[0.0; 8]).unwrap();
    let err = add_rms_norm(&x, &h, &w, EPS).unwrap_err().to_string();
    assert!(err.contains("add_rms_norm") && err.contains("f16"), "{err}");
    let empty = cpu(&[0, 4], &[]);
    let err = add_rms_norm(&empty, &empty, &w, EPS)
        .unwrap_err()
        .to_string();
    assert!(err.contains("zero-size"), "{err}");
    with_gpu(|gpu| {
        let err = add_rms_norm(&x, &x.to_device(gpu).unwrap(), &w, EPS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("add_rms_norm") && err.contains("cpu"), "{err}");
    });
}
