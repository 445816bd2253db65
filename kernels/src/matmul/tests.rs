//! GPU matmul kernels against the CPU backend, and the CPU backend against a naive triple loop.
//!
//! Tolerances: f32 compares at rtol 1e-4 and atol 1e-5 * sqrt(K) (inputs are standard normal, so outputs
//! grow like sqrt(K), and the two sides only sum in different orders). f16 inputs are the same f16
//! values on both sides and both accumulate in f32, so the results differ by at most about one f16
//! rounding: rtol 1e-2, atol 2e-2.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{assert_close, random_pair, with_gpu, Rng};

const DTYPES: [DType; 2] = [DType::F32, DType::F16];

fn tol(dtype: DType, k: usize) -> (f32, f32) {
    match dtype {
        DType::F16 => (2e-2, 1e-2),
        _ => (1e-5 * (k as f32).sqrt().max(1.0), 1e-4),
    }
}

/// One case: shapes of a and b, transpose_b, with a bias.
type Case = (&'static [usize], &'static [usize], bool, bool);

/// Runs every case on the CPU and the GPU and compares.
fn check_gpu(gpu: &Device, cases: &[Case], seed: u64) {
    for dtype in DTYPES {
        for (i, &(sa, sb, transpose_b, with_bias)) in cases.iter().enumerate() {
            let seed = seed + 10 * i as u64;
            let (ca, ga) = random_pair(gpu, sa, dtype, seed);
            let (cb, gb) = random_pair(gpu, sb, dtype, seed + 1);
            let n = if transpose_b {
                sb[sb.len() - 2]
            } else {
                sb[sb.len() - 1]
            };
            let (cbias, gbias) = random_pair(gpu, &[n], dtype, seed + 2);
            let opts = |bias| MatmulOptions {
                transpose_b,
                bias: with_bias.then_some(bias),
            };
            let want = matmul(&ca, &cb, opts(&cbias)).unwrap();
            let got = matmul(&ga, &gb, opts(&gbias)).unwrap();
            let what =
                format!("{dtype} {sa:?} x {sb:?} transpose_b={transpose_b} bias={with_bias}");
            assert_eq!(got.shape(), want.shape(), "{what}");
            assert_eq!(got.dtype(), dtype, "{what}");
            let (atol, rtol) = tol(dtype, sa[sa.len() - 1]);
            assert_close(
                &what,
                &got.to_vec_f32().unwrap(),
                &want.to_vec_f32().unwrap(),
                atol,
                rtol,
            );
        }
    }
}

#[test]
fn gpu_gemm_matches_cpu() {
    with_gpu(|gpu| {
        check_gpu(
            gpu,
            &[
                (&[1, 1], &[1, 1], false, false),
                // Scalar loads for both operands (K and N not multiples of 4), ragged tile edges.
                (&[65, 31], &[31, 130], false, false),
                (&[130, 67], &[67, 129], false, true),
                // vec4 loads for both, exact tiles, then ragged edges.
                (&[64, 32], &[32, 128], false, false),
                (&[70, 36], &[36, 52], false, true),
                // vec4 a, scalar b and the reverse.
                (&[9, 40], &[40, 7], false, false),
                (&[9, 39], &[39, 8], false, false),
                // One large dimension each.
                (&[6, 1000], &[1000, 24], false, false),
                (&[5, 40], &[40, 700], false, true),
            ],
            1000,
        );
    });
}

#[test]
fn gpu_batched_matches_cpu() {
    with_gpu(|gpu| {
        check_gpu(
            gpu,
            &[
                // Weights shared across the batch: folded into one taller GEMM.
                (&[3, 70, 36], &[36, 50], false, true),
                (&[3, 21, 35], &[1, 35, 20], false, false),
                (&[2, 3, 1, 17], &[9, 17], true, false),
                // Per-batch b.
                (&[2, 3, 21, 36], &[2, 3, 36, 20], false, false),
                (&[3, 19, 33], &[3, 33, 66], false, true),
                (&[2, 17, 24], &[2, 30, 24], true, true),
            ],
            2000,
        );
    });
}

#[test]
fn gpu_transposed_b_matches_cpu() {
    with_gpu(|gpu| {
        check_gpu(
            gpu,
            &[
                (&[2, 33, 64], &[40, 64], true, true),
                (&[2, 33, 64], &[40, 64], true, false),
                (&[45, 63], &[70, 63], true, false),
                (&[45, 63], &[70, 63], true, true),
                (&[20, 1000], &[24, 1000], true, true),
                (&[1, 77, 33], &[1, 5, 33], true, false),
            ],
            3000,
        );
    });
}

#[test]
fn gpu_gemv_matches_cpu() {
    with_gpu(|gpu| {
        check_gpu(
            gpu,
            &[
                (&[1, 77], &[77, 33], false, false),
                (&[1, 64], &[64, 100], false, true),
                (&[1, 256], &[50, 256], true, true),
                (&[1, 255], &[50, 255], true, false),
                (&[1, 1000], &[300, 1000], true, false),
                (&[1, 3], &[3, 1], false, true),
                // Per-batch b with one row each stays on the GEMV path.
                (&[2, 1, 40], &[2, 40, 36], false, false),
                (&[2, 1, 40], &[2, 36, 40], true, true),
            ],
            4000,
        );
    });
}

/// f64 triple loop over explicit indices: the reference the CPU backend is held to.
fn naive(a: &Tensor, b: &Tensor, transpose_b: bool, bias: Option<&Tensor>) -> Vec<f32> {
    let (va, vb) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    let vbias = bias.map(|t| t.to_vec_f32().unwrap());
    let (m, k) = (a.dim(-2), a.dim(-1));
    let n = if transpose_b { b.dim(-2) } else { b.dim(-1) };
    let batch = va.len() / (m * k);
    let b_batches = vb.len() / (k * n);
    let mut out = Vec::with_capacity(batch * m * n);
    for bi in 0..batch {
        let bb = if b_batches == 1 { 0 } else { bi };
        for i in 0..m {
            for j in 0..n {
                let mut s = vbias.as_ref().map_or(0.0, |v| v[j] as f64);
                for l in 0..k {
                    let x = va[bi * m * k + i * k + l] as f64;
                    let y = if transpose_b {
                        vb[bb * k * n + j * k + l]
                    } else {
                        vb[bb * k * n + l * n + j]
                    };
                    s += x * y as f64;
                }
                out.push(s as f32);
            }
        }
    }
    out
}

fn cpu_tensor(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(&Device::Cpu, shape, dtype, &Rng::new(seed).normals(n)).unwrap()
}

#[test]
fn cpu_matches_naive_loop() {
    let cases: [Case; 8] = [
        (&[1, 1], &[1, 1], false, false),
        (&[1, 77], &[77, 33], false, true),
        (&[65, 31], &[31, 130], false, false),
        (&[45, 63], &[70, 63], true, true),
        (&[3, 21, 35], &[35, 20], false, true),
        (&[2, 3, 21, 36], &[2, 3, 36, 20], false, false),
        (&[2, 17, 24], &[2, 30, 24], true, true),
        // Large enough for gemm's multithreaded path.
        (&[130, 200], &[97, 200], true, true),
    ];
    for dtype in DTYPES {
        for (i, &(sa, sb, transpose_b, with_bias)) in cases.iter().enumerate() {
            let a = cpu_tensor(sa, dtype, 50 + i as u64);
            let b = cpu_tensor(sb, dtype, 60 + i as u64);
            let n = if transpose_b {
                sb[sb.len() - 2]
            } else {
                sb[sb.len() - 1]
            };
            let bias = cpu_tensor(&[n], dtype, 70 + i as u64);
            let bias = with_bias.then_some(&bias);
            let got = matmul(&a, &b, MatmulOptions { transpose_b, bias }).unwrap();
            let mut want = naive(&a, &b, transpose_b, bias);
            if dtype == DType::F16 {
                want = want
                    .iter()
                    .map(|&v| half::f16::from_f32(v).to_f32())
                    .collect();
            }
            let (atol, rtol) = tol(dtype, sa[sa.len() - 1]);
            let what = format!("cpu {dtype} {sa:?} x {sb:?} transpose_b={transpose_b}");
            assert_close(&what, &got.to_vec_f32().unwrap(), &want, atol, rtol);
        }
    }
}

#[test]
fn cpu_small_product_is_exact() {
    let a = Tensor::from_f32(&Device::Cpu, &[2, 3], DType::F32, &[1., 2., 3., 4., 5., 6.]).unwrap();
    let b = Tensor::from_f32(
        &Device::Cpu,
        &[3, 2],
        DType::F32,
        &[7., 8., 9., 10., 11., 12.],
    )
    .unwrap();
    let bias = Tensor::from_f32(&Device::Cpu, &[2], DType::F32, &[0.5, -1.0]).unwrap();
    let opts = MatmulOptions {
        transpose_b: false,
        bias: Some(&bias),
    };
    let y = matmul(&a, &b, opts).unwrap();
    assert_eq!(y.shape(), [2, 2]);
    assert_eq!(y.to_vec_f32().unwrap(), [58.5, 63., 139.5, 153.]);
}

#[test]
fn linear_is_matmul_with_transposed_weight() {
    let x = cpu_tensor(&[2, 3, 12], DType::F32, 1);
    let w = cpu_tensor(&[5, 12], DType::F32, 2);
    let bias = cpu_tensor(&[5], DType::F32, 3);
    let y = linear(&x, &w, Some(&bias)).unwrap();
    assert_eq!(y.shape(), [2, 3, 5]);
    let want = naive(&x, &w, true, Some(&bias));
    assert_close("linear", &y.to_vec_f32().unwrap(), &want, 1e-5, 1e-5);
    let v = x.reshape(&[72]).unwrap();
    let v = Tensor::from_f32(
        &Device::Cpu,
        &[12],
        DType::F32,
        &v.to_vec_f32().unwrap()[..12],
    )
    .unwrap();
    let y = linear(&v, &w, None).unwrap();
    assert_eq!(y.shape(), [5]);
    let want = naive(&v.reshape(&[1, 12]).unwrap(), &w, true, None);
    assert_close(
        "linear of a vector",
        &y.to_vec_f32().unwrap(),
        &want,
        1e-5,
        1e-5,
    );
}

#[test]
fn bad_inputs_are_errors() {
    let t = |shape: &[usize]| cpu_tensor(shape, DType::F32, 9);
    let err = |a: &Tensor, b: &Tensor, transpose_b: bool, bias: Option<&Tensor>| {
        matmul(a, b, MatmulOptions { transpose_b, bias })
            .unwrap_err()
            .to_string()
    };
    let check = |msg: String, parts: &[&str]| {
        assert!(msg.contains("matmul"), "{msg}");
        for part in parts {
            assert!(msg.contains(part), "`{part}` missing from: {msg}");
        }
    };
    check(
        err(&t(&[2, 3]), &t(&[4, 5]), false, None),
        &["[2, 3]", "[4, 5]", "K=3"],
    );
    check(
        err(&t(&[2, 3]), &t(&[3, 5]), true, None),
        &["[2, 3]", "[3, 5]"],
    );
    check(err(&t(&[3]), &t(&[3, 5]), false, None), &["[3]", "rank"]);
    check(err(&t(&[2, 3]), &t(&[3]), false, None), &["[3]", "rank"]);
    check(
        err(&t(&[2, 3]), &t(&[3, 5]), false, Some(&t(&[4]))),
        &["bias", "[4]", "[5]"],
    );
    check(
        err(&t(&[2, 2, 3]), &t(&[3, 3, 5]), false, None),
        &["batch", "[2, 2, 3]", "[3, 3, 5]"],
    );
    let h = cpu_tensor(&[3, 5], DType::F16, 9);
    check(err(&t(&[2, 3]), &h, false, None), &["f16", "f32"]);
    let empty = Tensor::from_f32(&Device::Cpu, &[0, 3], DType::F32, &[]).unwrap();
    check(
        err(&empty, &t(&[3, 5]), false, None),
        &["zero-size", "[0, 3]"],
    );
    let ids = Tensor::from_u32(&Device::Cpu, &[2, 2], &[1, 2, 3, 4]).unwrap();
    check(err(&ids, &t(&[2, 2]), false, None), &["u32"]);
    let msg = linear(&t(&[2, 3]), &t(&[2, 2, 3]), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("linear") && msg.contains("[2, 2, 3]"), "{msg}");
}
