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
fn cpu_sized_upsample_picks_the_rows_pytorch_picks() {
    // Recorded with F.interpolate(torch.arange(i).view(1, 1, 1, i), size=(1, o), mode="nearest").
    let cases: [(usize, &[usize]); 4] = [
        (
            10,
            &[0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9],
        ),
        (4, &[0, 0, 1, 1, 2, 2, 3]),
        (7, &[0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]),
        (3, &[0, 0, 1, 1, 2]),
    ];
    for (input, want) in cases {
        let values: Vec<f32> = (0..input).map(|v| v as f32).collect();
        for dtype in [DType::F32, DType::F16] {
            // Along the width, then the same map along the height.
            let x = Tensor::from_f32(&Device::Cpu, &[1, 1, 1, input], dtype, &values).unwrap();
            let y = upsample_nearest2d_to(&x, 1, want.len()).unwrap();
            let got: Vec<usize> = y
                .to_vec_f32()
                .unwrap()
                .iter()
                .map(|&v| v as usize)
                .collect();
            assert_eq!(got, want, "{dtype} width {input} -> {}", want.len());
            let x = Tensor::from_f32(&Device::Cpu, &[1, 1, input, 1], dtype, &values).unwrap();
            let y = upsample_nearest2d_to(&x, want.len(), 1).unwrap();
            let got: Vec<usize> = y
                .to_vec_f32()
                .unwrap()
                .iter()
                .map(|&v| v as usize)
                .collect();
            assert_eq!(got, want, "{dtype} height {input} -> {}", want.len());
        }
    }
    // Twice the size is the same as factor 2; the same size is a copy.
    let (x, _) = random_pair(&Device::Cpu, &[2, 3, 5, 4], DType::F32, 9);
    let by_size = upsample_nearest2d_to(&x, 10, 8).unwrap();
    let by_factor = upsample_nearest2d(&x, 2).unwrap();
    assert_eq!(by_size.to_bytes().unwrap(), by_factor.to_bytes().unwrap());
    let same = upsample_nearest2d_to(&x, 5, 4).unwrap();
    assert_eq!(same.to_bytes().unwrap(), x.to_bytes().unwrap());
}

#[test]
fn gpu_sized_upsample_matches_cpu_exactly() {
    with_gpu(|gpu| {
        for dtype in [DType::F32, DType::F16] {
            for (shape, ho, wo) in [
                ([2usize, 3, 4, 7], 7usize, 13usize),
                ([1, 2, 10, 5], 19, 10),
                ([1, 1, 3, 3], 3, 5),
                ([1, 5, 2, 9], 1, 4),
            ] {
                let (cpu, dev) = random_pair(gpu, &shape, dtype, (ho * wo) as u64);
                let want = upsample_nearest2d_to(&cpu, ho, wo).unwrap();
                let got = upsample_nearest2d_to(&dev, ho, wo).unwrap();
                let what = format!("{dtype} {shape:?} -> {ho}x{wo}");
                assert_eq!(got.shape(), [shape[0], shape[1], ho, wo], "{what}");
                assert_eq!(got.to_bytes().unwrap(), want.to_bytes().unwrap(), "{what}");
            }
        }
    });
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
