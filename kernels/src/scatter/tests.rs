//! Row scatter: the CPU against rows replaced by hand and by a naive loop, the GPU against the CPU
//! (exact, bit for bit: rows are copied, not computed), the empty scatter, and the host's index checks.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{random_pair, with_gpu, Rng};

fn cpu_tensor(shape: &[usize], dtype: DType, values: &[f32]) -> Tensor {
    Tensor::from_f32(&Device::Cpu, shape, dtype, values).unwrap()
}

/// `x` with row `rows[m]` overwritten by row `m` of `src`, element by element.
fn naive(x: &[f32], dim: usize, rows: &[u32], src: &[f32]) -> Vec<f32> {
    let mut out = x.to_vec();
    for (m, &r) in rows.iter().enumerate() {
        for c in 0..dim {
            out[r as usize * dim + c] = src[m * dim + c];
        }
    }
    out
}

/// `count` distinct row indices below `n`, in random order (a partial Fisher-Yates shuffle).
fn distinct_rows(n: usize, count: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut all: Vec<u32> = (0..n as u32).collect();
    for i in 0..count {
        let j = i + rng.below((n - i) as u32) as usize;
        all.swap(i, j);
    }
    all.truncate(count);
    all
}

fn same_bits(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtypes differ");
    assert!(
        got.to_bytes().unwrap() == want.to_bytes().unwrap(),
        "{what}: values differ"
    );
}

#[test]
fn cpu_replaces_the_named_rows() {
    let x = cpu_tensor(&[4, 2], DType::F32, &[0., 1., 2., 3., 4., 5., 6., 7.]);
    let src = cpu_tensor(&[2, 2], DType::F32, &[10., 11., 12., 13.]);
    let out = scatter_rows(&x, &[3, 1], &src).unwrap();
    assert_eq!(out.shape(), [4, 2]);
    assert_eq!(
        out.to_vec_f32().unwrap(),
        [0., 1., 12., 13., 4., 5., 10., 11.]
    );
}

#[test]
fn cpu_matches_naive() {
    // (N, D, M): odd sizes, a single row, every row replaced, D a multiple of 4 and not.
    let cases = [(37, 24, 5), (37, 13, 36), (1, 3, 1), (9, 8, 9), (50, 1, 17)];
    for (i, &(n, dim, m)) in cases.iter().enumerate() {
        let rows = distinct_rows(n, m, 10 + i as u64);
        let xv = Rng::new(20 + i as u64).normals(n * dim);
        let sv = Rng::new(30 + i as u64).normals(m * dim);
        for dtype in [DType::F32, DType::F16] {
            let x = cpu_tensor(&[n, dim], dtype, &xv);
            let src = cpu_tensor(&[m, dim], dtype, &sv);
            let got = scatter_rows(&x, &rows, &src).unwrap();
            assert_eq!(got.shape(), [n, dim]);
            assert_eq!(got.dtype(), dtype);
            // Inputs as stored (rounded for f16); a copy then keeps them exactly.
            let want = naive(
                &x.to_vec_f32().unwrap(),
                dim,
                &rows,
                &src.to_vec_f32().unwrap(),
            );
            assert_eq!(
                got.to_vec_f32().unwrap(),
                want,
                "{dtype} N={n} D={dim} rows {rows:?}"
            );
        }
    }
}

#[test]
fn no_rows_returns_x_unchanged() {
    let values = Rng::new(3).normals(15);
    let check = |device: &Device| {
        for dtype in [DType::F32, DType::F16] {
            let x = cpu_tensor(&[5, 3], dtype, &values)
                .to_device(device)
                .unwrap();
            let src = cpu_tensor(&[0, 3], dtype, &[]).to_device(device).unwrap();
            let out = scatter_rows(&x, &[], &src).unwrap();
            same_bits(&format!("empty scatter {dtype}"), &out, &x);
        }
    };
    check(&Device::Cpu);
    with_gpu(check);
}

#[test]
fn gpu_matches_cpu_bit_for_bit() {
    with_gpu(|gpu| {
        // (N, D, M): odd D (scalar path), D a multiple of 4 (vec4 path), every row, one row, the
        // first and last rows, sizes that are not workgroup multiples, a wide row.
        let cases = [
            (37, 24, 5),
            (37, 13, 36),
            (37, 64, 37),
            (1, 3, 1),
            (300, 7, 1),
            (5, 5000, 2),
            (2, 4, 2),
        ];
        for dtype in [DType::F32, DType::F16] {
            for (i, &(n, dim, m)) in cases.iter().enumerate() {
                let rows = distinct_rows(n, m, 100 + i as u64);
                let (x, x_dev) = random_pair(gpu, &[n, dim], dtype, 200 + i as u64);
                let (src, src_dev) = random_pair(gpu, &[m, dim], dtype, 300 + i as u64);
                let want = scatter_rows(&x, &rows, &src).unwrap();
                let got = scatter_rows(&x_dev, &rows, &src_dev).unwrap();
                same_bits(
                    &format!("scatter_rows {dtype} N={n} D={dim} rows {rows:?}"),
                    &got,
                    &want,
                );
            }
        }
        // The rows at either end, in reverse order.
        let (x, x_dev) = random_pair(gpu, &[6, 4], DType::F32, 9);
        let (src, src_dev) = random_pair(gpu, &[2, 4], DType::F32, 10);
        let want = scatter_rows(&x, &[5, 0], &src).unwrap();
        let got = scatter_rows(&x_dev, &[5, 0], &src_dev).unwrap();
        same_bits("scatter_rows ends", &got, &want);
    });
}

#[test]
fn bad_inputs_are_errors() {
    let x = cpu_tensor(&[4, 3], DType::F32, &[0.0; 12]);
    let src =
        |m: usize, dim: usize, dtype: DType| cpu_tensor(&[m, dim], dtype, &vec![1.0; m * dim]);
    let err =
        |x: &Tensor, rows: &[u32], s: &Tensor| scatter_rows(x, rows, s).unwrap_err().to_string();

    let e = err(&x, &[1, 4], &src(2, 3, DType::F32));
    assert!(
        e.contains("scatter_rows")
            && e.contains("row index 4")
            && e.contains("rows[1]")
            && e.contains("N = 4"),
        "{e}"
    );
    let e = err(&x, &[2, 0, 2], &src(3, 3, DType::F32));
    assert!(
        e.contains("scatter_rows")
            && e.contains("row index 2")
            && e.contains("twice")
            && e.contains("rows[0] and rows[2]"),
        "{e}"
    );
    // src rows != number of indices; src width != x width.
    let e = err(&x, &[0, 1], &src(3, 3, DType::F32));
    assert!(
        e.contains("scatter_rows") && e.contains("`src` [3, 3]") && e.contains("[2, 3]"),
        "{e}"
    );
    let e = err(&x, &[0], &src(1, 2, DType::F32));
    assert!(
        e.contains("`src` [1, 2]") && e.contains("[1, 3]") && e.contains("[4, 3]"),
        "{e}"
    );
    let e = err(&x, &[], &src(1, 3, DType::F32));
    assert!(e.contains("`src` [1, 3]") && e.contains("[0, 3]"), "{e}");
    let e = err(&x, &[0], &src(1, 3, DType::F16));
    assert!(
        e.contains("scatter_rows") && e.contains("f32") && e.contains("f16") && e.contains("`src`"),
        "{e}"
    );
    let ids = Tensor::from_u32(&Device::Cpu, &[4, 3], &[0; 12]).unwrap();
    let e = err(&ids, &[0], &src(1, 3, DType::F32));
    assert!(
        e.contains("scatter_rows") && e.contains("u32") && e.contains("`x`"),
        "{e}"
    );
    let flat = cpu_tensor(&[12], DType::F32, &[0.0; 12]);
    let e = err(&flat, &[0], &src(1, 3, DType::F32));
    assert!(
        e.contains("scatter_rows") && e.contains("rank 2") && e.contains("[12]"),
        "{e}"
    );
    let flat_src = cpu_tensor(&[3], DType::F32, &[0.0; 3]);
    let e = err(&x, &[0], &flat_src);
    assert!(
        e.contains("`src`") && e.contains("rank 2") && e.contains("[3]"),
        "{e}"
    );
    let empty = cpu_tensor(&[0, 3], DType::F32, &[]);
    let e = err(&empty, &[], &src(0, 3, DType::F32));
    assert!(e.contains("scatter_rows") && e.contains("zero-size"), "{e}");
    with_gpu(|gpu| {
        let e = err(&x.to_device(gpu).unwrap(), &[0], &src(1, 3, DType::F32));
        assert!(
            e.contains("scatter_rows") && e.contains("`src`") && e.contains("device"),
            "{e}"
        );
        // Indices are checked on the host before anything runs on the GPU.
        let s = src(2, 3, DType::F32).to_device(gpu).unwrap();
        let e = err(&x.to_device(gpu).unwrap(), &[3, 3], &s);
        assert!(e.contains("row index 3") && e.contains("twice"), "{e}");
    });
}
