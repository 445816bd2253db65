//! Packing against hand-computed blocks (ggml's and bitsandbytes' exact bytes), the CPU quantised
//! linear against f32 references, and the GPU kernels against the CPU.
//!
//! Tolerances:
//! - CPU `qlinear_exact` vs the f32 matmul of the dequantised weight: both are f32 sums of the same
//!   products in different orders, so atol 1e-5 * sqrt(K), rtol 1e-4. (The integer path that
//!   `qlinear` takes for q4_0 / q8_0 on the CPU has its own tests and bounds in `int8_tests.rs`.)
//! - Quantised vs the original f32 weight on standard-normal data, as the relative RMS error of the
//!   output: q8_0 <= 1%, q4_0 <= 15%, nf4 <= 12% (measured 0.53%, 8.8% and 9.4% with f32
//!   activations; the integer path's rounded activations add about 0.5%).
//! - GPU vs CPU `qlinear_exact`: the same f32 products summed in another order: f32 atol 1e-4 * sqrt(K), rtol 1e-4;
//!   f16 outputs differ by at most one f16 rounding: atol 2e-2, rtol 1e-2.

use half::f16;
use kiln_runtime::{DType, Device, QTensor, QuantFormat, Tensor};

use super::*;
use crate::matmul::linear;
use crate::testing::{assert_close, rel_rms, with_gpu, Rng};

/// The CPU's f32-activation path, which the GPU kernels and the dequantised matmul must match.
fn exact(x: &Tensor, w: &QTensor, bias: Option<&Tensor>) -> Tensor {
    let k = w.shape()[1];
    let mut out_shape = x.shape().to_vec();
    *out_shape.last_mut().unwrap() = w.shape()[0];
    cpu::qlinear_exact(x, w, bias, x.numel() / k, &out_shape).unwrap()
}

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

#[test]
fn q8_0_block_matches_ggml_bytes() {
    // amax 127 gives d = 1 exactly; ggml rounds halves away from zero.
    let mut x = [0.0f32; 32];
    x[..6].copy_from_slice(&[127.0, -127.0, 0.0, 1.0, 2.5, -2.5]);
    x[31] = 0.4;
    let b = quantize(QuantFormat::Q8_0, &[1, 32], &x).unwrap();
    let mut want = vec![0u8; 34];
    want[..2].copy_from_slice(&[0x00, 0x3C]);
    want[2..8].copy_from_slice(&[0x7F, 0x81, 0x00, 0x01, 0x03, 0xFD]);
    assert_eq!(b, want);
    let back = dequantize(QuantFormat::Q8_0, &b).unwrap();
    assert_eq!(&back[..6], &[127.0, -127.0, 0.0, 1.0, 3.0, -3.0]);
}

#[test]
fn q4_0_block_matches_ggml_bytes() {
    // The largest magnitude is -8, so d = -8 / -8 = 1; code = min(15, trunc(x / d + 8.5)).
    let mut x = [0.0f32; 32];
    x[0] = -8.0;
    x[16] = 7.0;
    x[17] = 7.4;
    x[2] = 3.5;
    x[18] = -0.5;
    let b = quantize(QuantFormat::Q4_0, &[1, 32], &x).unwrap();
    let mut want = vec![0x88u8; 18];
    want[..2].copy_from_slice(&f16_bytes(1.0));
    // Byte j: weight j in the low nibble, weight j + 16 in the high nibble.
    want[2] = 0xF0;
    want[3] = 0xF8;
    want[4] = 0x8C;
    assert_eq!(b, want);
    let back = dequantize(QuantFormat::Q4_0, &b).unwrap();
    assert_eq!(
        (back[0], back[16], back[17], back[2], back[18]),
        (-8.0, 7.0, 7.0, 4.0, 0.0)
    );
    // A positive extreme gets a negative scale and still maps back exactly.
    let mut y = [0.0f32; 32];
    y[5] = 8.0;
    let b = quantize(QuantFormat::Q4_0, &[1, 32], &y).unwrap();
    assert_eq!(&b[..2], &f16_bytes(-1.0));
    assert_eq!(b[2 + 5], 0x80);
    assert_eq!(dequantize(QuantFormat::Q4_0, &b).unwrap()[5], 8.0);
}

#[test]
fn nf4_block_matches_bitsandbytes_packing() {
    // absmax 2; 1.0 normalises to 0.5, nearer 0.4407 (code 12) than 0.5626 (code 13).
    let mut x = [0.0f32; 64];
    x[..4].copy_from_slice(&[2.0, -2.0, 0.0, 1.0]);
    let b = quantize(QuantFormat::Nf4, &[1, 64], &x).unwrap();
    let mut want = vec![0x77u8; 36];
    want[..4].copy_from_slice(&2.0f32.to_le_bytes());
    // Element 2j in the high nibble, 2j + 1 in the low one.
    want[4] = 0xF0;
    want[5] = 0x7C;
    assert_eq!(b, want);
    let back = dequantize(QuantFormat::Nf4, &b).unwrap();
    assert_eq!(&back[..4], &[2.0, -2.0, 0.0, 0.440_709_83 * 2.0]);
}

#[test]
fn zero_blocks_pack_to_zero_scales() {
    for format in QuantFormat::PACKABLE {
        let x = vec![0.0f32; format.block_len()];
        let b = quantize(format, &[1, x.len()], &x).unwrap();
        assert!(
            dequantize(format, &b).unwrap().iter().all(|&v| v == 0.0),
            "{format}"
        );
    }
}

#[test]
fn k_not_a_block_multiple_is_an_error() {
    let err = quantize(QuantFormat::Q4_0, &[2, 40], &[0.0; 80])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("block size 32") && err.contains("[2, 40]"),
        "{err}"
    );
    let w = Tensor::from_f32(&Device::Cpu, &[2, 64], DType::F32, &[0.0; 128]).unwrap();
    let q = quantize_tensor(&w, QuantFormat::Nf4, &Device::Cpu).unwrap();
    let x = Tensor::from_f32(&Device::Cpu, &[3, 32], DType::F32, &[0.0; 96]).unwrap();
    let err = qlinear(&x, &q, None).unwrap_err().to_string();
    assert!(err.contains("[3, 32]") && err.contains("[2, 64]"), "{err}");
}

struct Case {
    x: Tensor,
    w: Tensor,
    bias: Tensor,
}

fn case(shape_x: &[usize], n: usize, dtype: DType, seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let k = *shape_x.last().unwrap();
    let xn: usize = shape_x.iter().product();
    Case {
        x: Tensor::from_f32(&Device::Cpu, shape_x, dtype, &rng.normals(xn)).unwrap(),
        w: Tensor::from_f32(&Device::Cpu, &[n, k], DType::F32, &rng.normals(n * k)).unwrap(),
        bias: Tensor::from_f32(&Device::Cpu, &[n], dtype, &rng.normals(n)).unwrap(),
    }
}

#[test]
fn cpu_qlinear_matches_dequantised_f32_matmul() {
    for format in QuantFormat::PACKABLE {
        // N = 45 spans two unpacking chunks unevenly; M = 3 with a batch dimension.
        let c = case(&[1, 3, 128], 45, DType::F32, 7);
        let q = quantize_tensor(&c.w, format, &Device::Cpu).unwrap();
        let deq = dequantize(format, &q.to_packed_bytes().unwrap()).unwrap();
        let wd = Tensor::from_f32(&Device::Cpu, &[45, 128], DType::F32, &deq).unwrap();
        let got = exact(&c.x, &q, Some(&c.bias));
        assert_eq!(got.shape(), &[1, 3, 45]);
        let want = linear(&c.x, &wd, Some(&c.bias)).unwrap();
        let atol = 1e-5 * (128f32).sqrt();
        assert_close(
            &format!("{format}"),
            &got.to_vec_f32().unwrap(),
            &want.to_vec_f32().unwrap(),
            atol,
            1e-4,
        );
    }
}

#[test]
fn cpu_single_row_qlinear_matches_dequantised_matmul_and_the_batched_path() {
    for format in QuantFormat::PACKABLE {
        // K = 192 is several blocks of either size; N = 45 an odd number of rows.
        let c = case(&[3, 192], 45, DType::F32, 8);
        let q = quantize_tensor(&c.w, format, &Device::Cpu).unwrap();
        let deq = dequantize(format, &q.to_packed_bytes().unwrap()).unwrap();
        let wd = Tensor::from_f32(&Device::Cpu, &[45, 192], DType::F32, &deq).unwrap();
        let batched = exact(&c.x, &q, Some(&c.bias)).to_vec_f32().unwrap();
        let atol = 1e-5 * (192f32).sqrt();
        for (shape, bias) in [(&[1usize, 192][..], true), (&[1, 1, 192][..], false)] {
            let row = &c.x.to_vec_f32().unwrap()[..192];
            let x = Tensor::from_f32(&Device::Cpu, shape, DType::F32, row).unwrap();
            let bias = bias.then_some(&c.bias);
            let got = exact(&x, &q, bias);
            let mut out_shape = shape.to_vec();
            *out_shape.last_mut().unwrap() = 45;
            assert_eq!(got.shape(), out_shape);
            let got = got.to_vec_f32().unwrap();
            let want = linear(&x, &wd, bias).unwrap().to_vec_f32().unwrap();
            assert_close(&format!("{format} {shape:?}"), &got, &want, atol, 1e-4);
            if bias.is_some() {
                assert_close(
                    &format!("{format} vs batched"),
                    &got,
                    &batched[..45],
                    atol,
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn quantised_error_against_f32_is_within_format_bounds() {
    for (format, bound) in [
        (QuantFormat::Q8_0, 0.01),
        (QuantFormat::Q4_0, 0.15),
        (QuantFormat::Nf4, 0.12),
    ] {
        let c = case(&[16, 256], 96, DType::F32, 11);
        let q = quantize_tensor(&c.w, format, &Device::Cpu).unwrap();
        let got = qlinear(&c.x, &q, None).unwrap().to_vec_f32().unwrap();
        let want = linear(&c.x, &c.w, None).unwrap().to_vec_f32().unwrap();
        let e = rel_rms(&got, &want);
        assert!(e <= bound, "{format}: relative RMS error {e} > {bound}");
        // And not trivially small: the weight really was quantised.
        assert!(
            e > bound / 100.0,
            "{format}: relative RMS error {e} suspiciously small"
        );
    }
}

#[test]
fn f16_activations_give_f16_outputs_on_cpu() {
    let c = case(&[2, 64], 5, DType::F16, 3);
    let q = quantize_tensor(&c.w, QuantFormat::Q8_0, &Device::Cpu).unwrap();
    let got = qlinear(&c.x, &q, Some(&c.bias)).unwrap();
    assert_eq!(got.dtype(), DType::F16);
    let x32 = Tensor::from_f32(
        &Device::Cpu,
        &[2, 64],
        DType::F32,
        &c.x.to_vec_f32().unwrap(),
    )
    .unwrap();
    let b32 = Tensor::from_f32(
        &Device::Cpu,
        &[5],
        DType::F32,
        &c.bias.to_vec_f32().unwrap(),
    )
    .unwrap();
    let want = qlinear(&x32, &q, Some(&b32)).unwrap();
    assert_close(
        "f16",
        &got.to_vec_f32().unwrap(),
        &want.to_vec_f32().unwrap(),
        2e-2,
        1e-2,
    );
}

/// Runs qlinear on the GPU and on the CPU with identical packed weights and inputs.
fn check_gpu(gpu: &Device, shape_x: &[usize], n: usize, with_bias: bool, seed: u64) {
    for dtype in [DType::F32, DType::F16] {
        if !gpu.supports(dtype) {
            continue;
        }
        for format in QuantFormat::PACKABLE {
            let k = *shape_x.last().unwrap();
            if !k.is_multiple_of(format.block_len()) {
                continue;
            }
            let c = case(shape_x, n, dtype, seed);
            let q = quantize_tensor(&c.w, format, &Device::Cpu).unwrap();
            let gq = q.to_device(gpu).unwrap();
            let (gx, gb) = (c.x.to_device(gpu).unwrap(), c.bias.to_device(gpu).unwrap());
            let want = exact(&c.x, &q, with_bias.then_some(&c.bias));
            let got = qlinear(&gx, &gq, with_bias.then_some(&gb)).unwrap();
            let what = format!("{format} {dtype} x {shape_x:?} n {n} bias {with_bias}");
            assert_eq!(got.shape(), want.shape(), "{what}");
            assert_eq!(got.dtype(), dtype, "{what}");
            let (atol, rtol) = match dtype {
                DType::F16 => (2e-2, 1e-2),
                _ => (1e-4 * (k as f32).sqrt(), 1e-4),
            };
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
fn gpu_qgemv_matches_cpu() {
    with_gpu(|gpu| {
        // M = 1 and M = GEMV_MAX_M; N not a multiple of the 8 columns per workgroup; several blocks
        // per thread slice (K = 2112 is 66 q-blocks, 33 nf4 blocks).
        check_gpu(gpu, &[1, 64], 13, true, 1);
        check_gpu(gpu, &[2, 4, 192], 7, false, 2);
        check_gpu(gpu, &[1, 2112], 9, true, 3);
    });
}

#[test]
fn gpu_qgemm_matches_cpu() {
    with_gpu(|gpu| {
        // M just past the GEMV limit; ragged 64x64 tiles in both directions; q-only K = 96 (three
        // 32-blocks, which nf4 cannot take and skips).
        check_gpu(gpu, &[9, 64], 5, true, 4);
        check_gpu(gpu, &[70, 128], 67, true, 5);
        check_gpu(gpu, &[2, 33, 96], 20, false, 6);
    });
}

#[test]
fn gpu_weight_on_another_device_is_an_error() {
    with_gpu(|gpu| {
        let c = case(&[2, 32], 3, DType::F32, 9);
        let q = quantize_tensor(&c.w, QuantFormat::Q8_0, gpu).unwrap();
        let err = qlinear(&c.x, &q, None).unwrap_err().to_string();
        assert!(err.contains("qlinear") && err.contains("weight"), "{err}");
    });
}

#[test]
fn gpu_reads_subnormal_f16_scales() {
    with_gpu(|gpu| {
        // Weights around 1e-4 give q8_0 / q4_0 scales below f16's normal range (6.1e-5).
        let mut rng = Rng::new(21);
        let w: Vec<f32> = rng.normals(4 * 64).iter().map(|v| v * 1e-4).collect();
        let w = Tensor::from_f32(&Device::Cpu, &[4, 64], DType::F32, &w).unwrap();
        let x = Tensor::from_f32(&Device::Cpu, &[2, 64], DType::F32, &rng.normals(128)).unwrap();
        for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
            let q = quantize_tensor(&w, format, &Device::Cpu).unwrap();
            let want = exact(&x, &q, None).to_vec_f32().unwrap();
            assert!(
                want.iter().any(|&v| v != 0.0),
                "{format}: scales flushed to zero"
            );
            let got = qlinear(&x.to_device(gpu).unwrap(), &q.to_device(gpu).unwrap(), None)
                .unwrap()
                .to_vec_f32()
                .unwrap();
            assert_close(&format!("{format}"), &got, &want, 1e-8, 1e-4);
        }
    });
}
