//! Nearest upsampling: the CPU against a hand-written case, the GPU against the CPU (exactly: both copy
//! values without arithmetic, so the tolerance is 0), and the guards.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{random_pair, with_gpu};

#[test]
fn cpu_repeats_each_value_in_a_block() {
    let x = Tensor::from_f32(
        &Device::Cpu,
        &[1, 1, 2, 3],
        DType::F32,
        &[1., 2., 3., 4., 5., 6.],
    )
    .unwrap();
    let y = upsample_nearest2d(&x, 2).unwrap();
    assert_eq!(y.shape(), [1, 1, 4, 6]);
    #[rustfmt::skip]
    let want = [
        1., 1., 2., 2., 3., 3.,
        1., 1., 2., 2., 3., 3.,
        4., 4., 5., 5., 6., 6.,
        4., 4., 5., 5., 6., 6.,
    ];
    assert_eq!(y.to_vec_f32().unwrap(), want);
    // Factor 3 on [2, 1, 1, 2]: each image separately, out[.., oh, ow] = x[.., oh / 3, ow / 3].
    let x = Tensor::from_f32(&Device::Cpu, &[2, 1, 1, 2], DType::F16, &[1., 2., 3., 4.]).unwrap();
    let y = upsample_nearest2d(&x, 3).unwrap().to_vec_f32().unwrap();
    assert_eq!(y.len(), 2 * 3 * 6);
    for (i, &v) in y.iter().enumerate() {
        let (img, ow) = (i / 18, i % 6);
        assert_eq!(v, (img * 2 + ow / 3 + 1) as f32, "element {i}");
    }
}

#[test]
fn gpu_upsample_matches_cpu_exactly() {
    with_gpu(|gpu| {
        for dtype in [DType::F32, DType::F16] {
            for (shape, factor) in [
                ([2usize, 3, 5, 7], 2usize),
                ([2, 3, 5, 7], 3),
                ([1, 1, 1, 1], 2),
                ([1, 4, 3, 1], 1),
                ([1, 2, 33, 9], 2),
            ] {
                let (cpu, dev) = random_pair(gpu, &shape, dtype, factor as u64);
                let want = upsample_nearest2d(&cpu, factor).unwrap();
                let got = upsample_nearest2d(&dev, factor).unwrap();
                let what = format!("{dtype} {shape:?} x{factor}");
                assert_eq!(got.shape(), want.shape(), "{what}");
                assert_eq!(got.dtype(), dtype, "{what}");
                assert_eq!(got.to_bytes().unwrap(), want.to_bytes().unwrap(), "{what}");
            }
        }
    });
}

#[test]
fn bad_inputs_are_errors() {
    let err = |shape: &[usize], factor: usize| {
        let n: usize = shape.iter().product();
        let x = Tensor::from_f32(&Device::Cpu, shape, DType::F32, &vec![0.0; n]).unwrap();
        upsample_nearest2d(&x, factor).unwrap_err().to_string()
    };
    let e = err(&[3, 4, 4], 2);
    assert!(
        e.contains("upsample_nearest2d") && e.contains("[3, 4, 4]"),
        "{e}"
    );
    let e = err(&[1, 1, 2, 2], 0);
    assert!(
        e.contains("upsample_nearest2d") && e.contains("factor") && e.contains("[1, 1, 2, 2]"),
        "{e}"
    );
    let e = err(&[1, 0, 2, 2], 2);
    assert!(
        e.contains("upsample_nearest2d") && e.contains("zero-size"),
        "{e}"
    );
    let ids = Tensor::from_u32(&Device::Cpu, &[1, 1, 1, 1], &[3]).unwrap();
    let e = upsample_nearest2d(&ids, 2).unwrap_err().to_string();
    assert!(e.contains("upsample_nearest2d") && e.contains("u32"), "{e}");
}
