//! GPU softmax against the CPU reference, and the CPU reference against closed forms.
//!
//! Tolerances: f32 1e-6 absolute + 1e-4 relative (outputs of wide rows are ~1/width, so a 1e-4
//! absolute bound would check nothing there); f16 2e-2 + 1e-2 (`testing::tolerance`).

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{assert_close, tolerance, with_gpu, Rng};

fn cpu(shape: &[usize], values: &[f32]) -> Tensor {
    Tensor::from_f32(&Device::Cpu, shape, DType::F32, values).unwrap()
}

#[test]
fn cpu_softmax_matches_closed_forms() {
    let e = std::f32::consts::E;
    // Large logits: a naive exp() would overflow to inf and give NaN.
    let x = cpu(&[3, 2], &[0.0, 2f32.ln(), 1e4, 1e4 + 1.0, -7.0, -7.0]);
    let got = softmax(&x, 1.0).unwrap().to_vec_f32().unwrap();
    let want = [
        1.0 / 3.0,
        2.0 / 3.0,
        1.0 / (1.0 + e),
        e / (1.0 + e),
        0.5,
        0.5,
    ];
    assert_close("softmax", &got, &want, 1e-6, 1e-6);
    // The scale applies before the exponential; a negative scale flips the order.
    let got = softmax(&cpu(&[1, 2], &[0.0, 4.0]), -0.25).unwrap();
    assert_close(
        "scaled",
        &got.to_vec_f32().unwrap(),
        &[e / (1.0 + e), 1.0 / (1.0 + e)],
        1e-6,
        1e-6,
    );
    // Width 1 is always 1; random rows sum to 1.
    let one = softmax(&cpu(&[3, 1], &[-5.0, 0.0, 9.0]), 0.3).unwrap();
    assert_eq!(one.to_vec_f32().unwrap(), [1.0; 3]);
    let rows = softmax(&cpu(&[4, 301], &Rng::new(1).normals(4 * 301)), 2.0).unwrap();
    for row in rows.to_vec_f32().unwrap().chunks(301) {
        let sum: f64 = row.iter().map(|&v| v as f64).sum();
        assert_close("row sum", &[sum as f32], &[1.0], 1e-5, 0.0);
        assert!(row.iter().all(|&v| v > 0.0));
    }
}

#[test]
fn gpu_softmax_matches_cpu() {
    with_gpu(|gpu| {
        for dtype in [DType::F32, DType::F16] {
            let (atol, rtol) = match dtype {
                DType::F32 => (1e-6, 1e-4),
                _ => tolerance(dtype),
            };
            for width in [1usize, 77, 300, 5000] {
                let rows = 5;
                let mut rng = Rng::new(width as u64);
                let mut values = rng.normals(rows * width);
                // Rows 1 and 3: logits up to +-1e4 and all near 1e4 (exp would overflow unshifted).
                for v in &mut values[width..2 * width] {
                    *v *= 1e4 / 4.0;
                }
                for v in &mut values[3 * width..4 * width] {
                    *v = 1e4 + 8.0 * *v;
                }
                let c = Tensor::from_f32(&Device::Cpu, &[rows, width], dtype, &values).unwrap();
                let g = c.to_device(gpu).unwrap();
                for scale in [1.0, 0.125, -0.7] {
                    let want = softmax(&c, scale).unwrap().to_vec_f32().unwrap();
                    let got = softmax(&g, scale).unwrap().to_vec_f32().unwrap();
                    assert!(got.iter().all(|v| v.is_finite()), "{dtype} {width} {scale}");
                    let what = format!("{dtype} [{rows}, {width}] scale={scale}");
                    assert_close(&what, &got, &want, atol, rtol);
                }
            }
        }
        // Rank 3, rows past one workgroup's worth.
        let c = cpu(&[3, 100, 7], &Rng::new(9).normals(2100));
        let g = c.to_device(gpu).unwrap();
        let want = softmax(&c, 0.5).unwrap().to_vec_f32().unwrap();
        let got = softmax(&g, 0.5).unwrap().to_vec_f32().unwrap();
        assert_close("[3, 100, 7]", &got, &want, 1e-6, 1e-4);
    });
}

#[test]
fn bad_inputs_are_errors() {
    let empty = cpu(&[2, 0], &[]);
    let err = softmax(&empty, 1.0).unwrap_err().to_string();
    assert!(err.contains("softmax") && err.contains("[2, 0]"), "{err}");
    let scalar = cpu(&[], &[1.0]);
    let err = softmax(&scalar, 1.0).unwrap_err().to_string();
    assert!(err.contains("softmax") && err.contains("scalar"), "{err}");
    let ids = Tensor::from_u32(&Device::Cpu, &[2], &[1, 2]).unwrap();
    let err = softmax(&ids, 1.0).unwrap_err().to_string();
    assert!(err.contains("softmax") && err.contains("u32"), "{err}");
}
