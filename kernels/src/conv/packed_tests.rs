//! Convolutions with packed (q8_0 / q4_0 / nf4) weights: the CPU path against the float convolution of
//! the dequantised weight, the GPU kernel against the CPU path, the quantisation error against the
//! float weight, and the guards.
//!
//! Tolerances (|got - want| <= atol + rtol |want|):
//! - CPU packed vs float conv of the dequantised weight: the same f32 products summed in another order
//!   (row chunks), f32 atol 1e-4 * sqrt(K), rtol 1e-4.
//! - GPU vs CPU: likewise for f32; f16 outputs differ by at most one f16 rounding of values of size
//!   ~sqrt(K): atol 1e-2 * sqrt(K) / 8, rtol 1e-2.
//! - Against the float (unquantised) weight: relative RMS error within the format's bound, the same
//!   bounds as the quantised linear layer (q8_0 0.01, q4_0 0.15, nf4 0.12).

use kiln_runtime::{DType, Device, QTensor, QuantFormat, Tensor};

use super::*;
use crate::quant::{dequantize, quantize_tensor};
use crate::testing::{assert_close, rel_rms, with_gpu, Rng};

/// One convolution: input and weight shapes, stride, padding.
struct Case {
    x: [usize; 4],
    cout: usize,
    kernel: usize,
    stride: [usize; 2],
    pad: Padding2d,
}

impl Case {
    fn k(&self) -> usize {
        self.x[1] * self.kernel * self.kernel
    }
}

fn cases() -> Vec<Case> {
    vec![
        // Cout 70: two 64-row tiles, the second ragged; 11x9 pixels: ragged column tiles.
        Case {
            x: [1, 64, 11, 9],
            cout: 70,
            kernel: 3,
            stride: [1, 1],
            pad: Padding2d::symmetric(1, 1),
        },
        // Two images folded into the columns; stride 2 with the VAE encoder's bottom/right padding.
        Case {
            x: [2, 64, 9, 10],
            cout: 5,
            kernel: 3,
            stride: [2, 2],
            pad: Padding2d {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1,
            },
        },
        // K = 32 * 9 = 288: nine q-blocks per row (nf4 cannot take it and is skipped).
        Case {
            x: [1, 32, 7, 13],
            cout: 9,
            kernel: 3,
            stride: [1, 1],
            pad: Padding2d::symmetric(1, 1),
        },
    ]
}

struct Data {
    x: Tensor,
    w: Tensor,
    bias: Tensor,
}

fn data(c: &Case, dtype: DType, seed: u64) -> Data {
    let mut rng = Rng::new(seed);
    let xn: usize = c.x.iter().product();
    let wshape = [c.cout, c.x[1], c.kernel, c.kernel];
    let wn: usize = wshape.iter().product();
    Data {
        x: Tensor::from_f32(&Device::Cpu, &c.x, dtype, &rng.normals(xn)).unwrap(),
        w: Tensor::from_f32(&Device::Cpu, &wshape, DType::F32, &rng.normals(wn)).unwrap(),
        bias: Tensor::from_f32(&Device::Cpu, &[c.cout], dtype, &rng.normals(c.cout)).unwrap(),
    }
}

fn pack(w: &Tensor, format: QuantFormat) -> QTensor {
    let matrix = [w.dim(0), w.numel() / w.dim(0)];
    quantize_tensor(&w.reshape(&matrix).unwrap(), format, &Device::Cpu).unwrap()
}

fn packed_conv(x: &Tensor, q: &QTensor, c: &Case, bias: Option<&Tensor>) -> Tensor {
    qconv2d_padded(x, q, [c.kernel; 2], bias, c.stride, c.pad).unwrap()
}

fn formats_for(c: &Case) -> impl Iterator<Item = QuantFormat> + '_ {
    QuantFormat::PACKABLE
        .into_iter()
        .filter(|f| c.k().is_multiple_of(f.block_len()))
}

#[test]
fn cpu_packed_conv_matches_float_conv_of_dequantised_weight() {
    for (i, c) in cases().iter().enumerate() {
        for format in formats_for(c) {
            let d = data(c, DType::F32, 10 + i as u64);
            let q = pack(&d.w, format);
            let deq = dequantize(format, &q.to_packed_bytes().unwrap()).unwrap();
            let wd = Tensor::from_f32(&Device::Cpu, d.w.shape(), DType::F32, &deq).unwrap();
            let got = packed_conv(&d.x, &q, c, Some(&d.bias));
            let want = conv2d_padded(&d.x, &wd, Some(&d.bias), c.stride, c.pad).unwrap();
            let what = format!("{format} x {:?} cout {}", c.x, c.cout);
            assert_eq!(got.shape(), want.shape(), "{what}");
            assert_close(
                &what,
                &got.to_vec_f32().unwrap(),
                &want.to_vec_f32().unwrap(),
                1e-4 * (c.k() as f32).sqrt(),
                1e-4,
            );
        }
    }
}

#[test]
fn packed_conv_error_against_float_weight_is_within_format_bounds() {
    let c = &cases()[0];
    for (format, bound) in [
        (QuantFormat::Q8_0, 0.01),
        (QuantFormat::Q4_0, 0.15),
        (QuantFormat::Nf4, 0.12),
    ] {
        let d = data(c, DType::F32, 3);
        let got = packed_conv(&d.x, &pack(&d.w, format), c, None);
        let want = conv2d_padded(&d.x, &d.w, None, c.stride, c.pad).unwrap();
        let e = rel_rms(&got.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap());
        assert!(e <= bound, "{format}: relative RMS error {e} > {bound}");
        assert!(e > bound / 100.0, "{format}: error {e} suspiciously small");
    }
}

#[test]
fn gpu_packed_conv_matches_cpu() {
    with_gpu(|gpu| {
        for (i, c) in cases().iter().enumerate() {
            for dtype in [DType::F32, DType::F16] {
                if !gpu.supports(dtype) {
                    continue;
                }
                for format in formats_for(c) {
                    for with_bias in [true, false] {
                        let d = data(c, dtype, 20 + i as u64);
                        let q = pack(&d.w, format);
                        let bias = with_bias.then_some(&d.bias);
                        let want = packed_conv(&d.x, &q, c, bias);
                        let (gx, gb) =
                            (d.x.to_device(gpu).unwrap(), d.bias.to_device(gpu).unwrap());
                        let gq = q.to_device(gpu).unwrap();
                        let got = packed_conv(&gx, &gq, c, with_bias.then_some(&gb));
                        let what = format!(
                            "{format} {dtype} x {:?} cout {} bias {with_bias}",
                            c.x, c.cout
                        );
                        assert_eq!(got.shape(), want.shape(), "{what}");
                        assert_eq!(got.dtype(), dtype, "{what}");
                        let sk = (c.k() as f32).sqrt();
                        let (atol, rtol) = match dtype {
                            DType::F16 => (1e-2 * sk / 8.0, 1e-2),
                            _ => (1e-4 * sk, 1e-4),
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
        }
    });
}

#[test]
fn packed_weight_that_is_not_a_whole_kernel_is_an_error() {
    let c = &cases()[0];
    let d = data(c, DType::F32, 5);
    let q = pack(&d.w, QuantFormat::Q8_0);
    // K = 576 is not a multiple of 5 * 5.
    let err = qconv2d_padded(&d.x, &q, [5, 5], None, [1, 1], Padding2d::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("qconv2d") && err.contains("[70, 576]"),
        "{err}"
    );
    // A weight for 32 input channels given 64-channel images names both.
    let q32 = pack(&data(&cases()[2], DType::F32, 6).w, QuantFormat::Q8_0);
    let err = qconv2d_padded(&d.x, &q32, [3, 3], None, c.stride, c.pad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("64 input channels") && err.contains("expects 32"),
        "{err}"
    );
}
