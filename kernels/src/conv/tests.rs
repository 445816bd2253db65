//! The CPU convolution against a naive 7-loop convolution, the GPU kernel against the CPU one, and the
//! guards.
//!
//! Tolerances (|got - want| <= atol + rtol |want|): f32 atol 1e-4 * sqrt(K), rtol 1e-4, K = Cin KH KW
//! (both sides sum K products of N(0,1) values in f32, in different orders); f16 atol 1e-2, rtol 1e-2
//! (identical f16 inputs, f32 accumulation on both sides: they differ by at most the final rounding,
//! about 1e-3 relative). CPU vs the f64 naive loops uses the f32 bound.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{assert_close, random_pair, with_gpu, Rng};

/// (N, Cin, H, W, Cout, KH, KW, stride, padding, bias)
type Case = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    [usize; 2],
    [usize; 2],
    bool,
);

fn tol(dtype: DType, k: usize) -> (f32, f32) {
    match dtype {
        DType::F16 => (1e-2, 1e-2),
        _ => (1e-4 * (k as f32).sqrt(), 1e-4),
    }
}

fn geom(c: &Case) -> Geometry {
    let &(n, cin, h, w, cout, kh, kw, stride, pad, _) = c;
    geometry("test", &[n, cin, h, w], &[cout, cin, kh, kw], stride, pad).unwrap()
}

/// Seven nested loops over (n, co, oh, ow, ci, kh, kw), in f64.
fn naive(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    let mut out = Vec::with_capacity(g.n * g.cout * g.pixels());
    for n in 0..g.n {
        for co in 0..g.cout {
            for oh in 0..g.ho {
                for ow in 0..g.wo {
                    let mut acc = bias.map_or(0.0, |b| b[co] as f64);
                    for ci in 0..g.cin {
                        for dy in 0..g.kh {
                            for dx in 0..g.kw {
                                let ih = (oh * g.stride[0] + dy) as isize - g.pad[0] as isize;
                                let iw = (ow * g.stride[1] + dx) as isize - g.pad[1] as isize;
                                if ih < 0 || iw < 0 || ih >= g.h as isize || iw >= g.w as isize {
                                    continue;
                                }
                                let xi = ((n * g.cin + ci) * g.h + ih as usize) * g.w + iw as usize;
                                let wi = ((co * g.cin + ci) * g.kh + dy) * g.kw + dx;
                                acc += x[xi] as f64 * w[wi] as f64;
                            }
                        }
                    }
                    out.push(acc as f32);
                }
            }
        }
    }
    out
}

#[test]
fn output_size_follows_torch() {
    // (7 + 2 - 3) / 2 + 1 = 4 and (9 + 2 - 3) / 2 + 1 = 5
    let g = geometry("conv2d", &[2, 3, 7, 9], &[5, 3, 3, 3], [2, 2], [1, 1]).unwrap();
    assert_eq!((g.ho, g.wo, g.k(), g.pixels()), (4, 5, 27, 20));
    let g = geometry("conv2d", &[1, 1, 1, 1], &[1, 1, 3, 3], [1, 1], [1, 1]).unwrap();
    assert_eq!((g.ho, g.wo), (1, 1));
}

#[test]
fn cpu_conv_matches_naive_loops() {
    let cases: [Case; 9] = [
        (2, 3, 7, 9, 5, 3, 3, [1, 1], [1, 1], true),
        (2, 3, 7, 9, 5, 3, 3, [2, 2], [1, 1], true),
        (2, 3, 7, 9, 5, 3, 3, [2, 2], [0, 0], false),
        (2, 3, 7, 9, 5, 1, 1, [1, 1], [0, 0], true), // pointwise: no im2col
        (2, 3, 7, 9, 5, 1, 1, [2, 2], [1, 1], false),
        (1, 1, 1, 1, 1, 3, 3, [1, 1], [1, 1], true),
        (1, 4, 6, 5, 3, 3, 2, [2, 1], [2, 0], true), // separate (h, w) sizes
        (1, 2, 5, 5, 2, 5, 5, [3, 3], [3, 3], false), // stride past the input edge
        (3, 8, 12, 10, 70, 3, 3, [1, 1], [1, 1], true),
    ];
    for (i, c) in cases.iter().enumerate() {
        let g = geom(c);
        let mut rng = Rng::new(i as u64);
        let x = rng.normals(g.n * g.cin * g.h * g.w);
        let w = rng.normals(g.cout * g.k());
        let b = rng.normals(g.cout);
        let bias = c.9.then_some(&b[..]);
        let want = naive(&x, &w, bias, &g);
        let (atol, rtol) = tol(DType::F32, g.k());
        let got = cpu::conv2d_f32(&x, &w, bias, &g);
        assert_close(&format!("cpu {c:?}"), &got, &want, atol, rtol);
        // im2col blocks that split output rows, and one pixel at a time.
        for block in [1, 7] {
            let got = cpu::conv2d_blocked(&x, cpu::Rows::F32(&w), bias, &g, block);
            assert_close(&format!("cpu {c:?} block {block}"), &got, &want, atol, rtol);
        }
    }
}

/// Uneven paddings (top, bottom, left, right) as (N, Cin, H, W, Cout, KH, KW, stride, padding).
type PaddedCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    [usize; 2],
    Padding2d,
);

fn padded_cases() -> Vec<PaddedCase> {
    let pad = |top, bottom, left, right| Padding2d {
        top,
        bottom,
        left,
        right,
    };
    vec![
        // diffusers' VAE downsampler: F.pad(x, (0, 1, 0, 1)) then a stride-2 3x3 conv, even and odd sizes.
        (2, 3, 8, 8, 5, 3, 3, [2, 2], pad(0, 1, 0, 1)),
        (1, 4, 7, 9, 6, 3, 3, [2, 2], pad(0, 1, 0, 1)),
        (1, 2, 6, 5, 3, 3, 2, [1, 2], pad(2, 0, 1, 3)),
        // Only bottom/right padding on a 1x1 kernel: the output grows, so no pointwise shortcut.
        (2, 3, 4, 5, 4, 1, 1, [1, 1], pad(0, 2, 0, 1)),
    ]
}

#[test]
fn cpu_uneven_padding_matches_naive_loops() {
    for (i, &(n, cin, h, w, cout, kh, kw, stride, pad)) in padded_cases().iter().enumerate() {
        let g =
            geometry_padded("test", &[n, cin, h, w], &[cout, cin, kh, kw], stride, pad).unwrap();
        assert_eq!(
            (g.ho, g.wo),
            (
                (h + pad.top + pad.bottom - kh) / stride[0] + 1,
                (w + pad.left + pad.right - kw) / stride[1] + 1
            )
        );
        let mut rng = Rng::new(40 + i as u64);
        let x = rng.normals(n * cin * h * w);
        let wt = rng.normals(cout * g.k());
        let b = rng.normals(cout);
        let want = naive(&x, &wt, Some(&b), &g);
        let (atol, rtol) = tol(DType::F32, g.k());
        for block in [1, 7, 1 << 20] {
            let got = cpu::conv2d_blocked(&x, cpu::Rows::F32(&wt), Some(&b), &g, block);
            assert_close(
                &format!("cpu {pad:?} block {block}"),
                &got,
                &want,
                atol,
                rtol,
            );
        }
    }
    // The symmetric entry points are the same convolution.
    let (x, _) = random_pair(&Device::Cpu, &[1, 2, 5, 5], DType::F32, 3);
    let (w, _) = random_pair(&Device::Cpu, &[3, 2, 3, 3], DType::F32, 4);
    let a = conv2d_hw(&x, &w, None, [2, 1], [1, 2]).unwrap();
    let b = conv2d_padded(&x, &w, None, [2, 1], Padding2d::symmetric(1, 2)).unwrap();
    assert_eq!(a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
}

#[test]
fn gpu_uneven_padding_matches_cpu() {
    with_gpu(|gpu| {
        for dtype in [DType::F32, DType::F16] {
            for (i, &(n, cin, h, w, cout, kh, kw, stride, pad)) in padded_cases().iter().enumerate()
            {
                let seed = 500 + 10 * i as u64;
                let (cx, gx) = random_pair(gpu, &[n, cin, h, w], dtype, seed);
                let (cw, gw) = random_pair(gpu, &[cout, cin, kh, kw], dtype, seed + 1);
                let (cb, gb) = random_pair(gpu, &[cout], dtype, seed + 2);
                let want = conv2d_padded(&cx, &cw, Some(&cb), stride, pad).unwrap();
                let got = conv2d_padded(&gx, &gw, Some(&gb), stride, pad).unwrap();
                assert_eq!(got.shape(), want.shape(), "{pad:?}");
                let (atol, rtol) = tol(dtype, cin * kh * kw);
                assert_close(
                    &format!("gpu {dtype} {pad:?}"),
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
fn cpu_conv_handles_f16_and_tensors() {
    let c: Case = (2, 3, 7, 9, 5, 3, 3, [2, 2], [1, 1], true);
    let g = geom(&c);
    let mut rng = Rng::new(5);
    let xs = rng.normals(2 * 3 * 7 * 9);
    let ws = rng.normals(5 * 27);
    let bs = rng.normals(5);
    for dtype in [DType::F32, DType::F16] {
        let x = Tensor::from_f32(&Device::Cpu, &[2, 3, 7, 9], dtype, &xs).unwrap();
        let w = Tensor::from_f32(&Device::Cpu, &[5, 3, 3, 3], dtype, &ws).unwrap();
        let b = Tensor::from_f32(&Device::Cpu, &[5], dtype, &bs).unwrap();
        let opts = Conv2dOptions {
            stride: 2,
            padding: 1,
        };
        let got = conv2d(&x, &w, Some(&b), opts).unwrap();
        assert_eq!((got.shape(), got.dtype()), (&[2, 5, 4, 5][..], dtype));
        // The reference sees the same (rounded) inputs.
        let want = naive(
            &x.to_vec_f32().unwrap(),
            &w.to_vec_f32().unwrap(),
            Some(&b.to_vec_f32().unwrap()),
            &g,
        );
        let (atol, rtol) = tol(dtype, g.k());
        assert_close(
            &format!("conv2d {dtype}"),
            &got.to_vec_f32().unwrap(),
            &want,
            atol,
            rtol,
        );
    }
}

/// Runs each case on the GPU and the CPU, in f32 and f16.
fn gpu_matches_cpu(gpu: &Device, cases: &[Case]) {
    for dtype in [DType::F32, DType::F16] {
        for (i, c) in cases.iter().enumerate() {
            let &(n, cin, h, w, cout, kh, kw, stride, pad, with_bias) = c;
            let seed = 100 * i as u64;
            let (cx, gx) = random_pair(gpu, &[n, cin, h, w], dtype, seed);
            let (cw, gw) = random_pair(gpu, &[cout, cin, kh, kw], dtype, seed + 1);
            let (cb, gb) = random_pair(gpu, &[cout], dtype, seed + 2);
            let want = conv2d_hw(&cx, &cw, with_bias.then_some(&cb), stride, pad).unwrap();
            let got = conv2d_hw(&gx, &gw, with_bias.then_some(&gb), stride, pad).unwrap();
            assert_eq!(got.shape(), want.shape(), "{c:?}");
            assert_eq!(got.dtype(), dtype);
            let (atol, rtol) = tol(dtype, cin * kh * kw);
            assert_close(
                &format!("gpu {dtype} {c:?}"),
                &got.to_vec_f32().unwrap(),
                &want.to_vec_f32().unwrap(),
                atol,
                rtol,
            );
        }
    }
}

#[test]
fn gpu_conv_small_and_odd_shapes_match_cpu() {
    with_gpu(|gpu| {
        gpu_matches_cpu(
            gpu,
            &[
                (2, 3, 7, 9, 5, 1, 1, [1, 1], [0, 0], true),
                (2, 3, 7, 9, 5, 1, 1, [1, 1], [0, 0], false),
                (2, 3, 7, 9, 5, 1, 1, [2, 2], [1, 1], true),
                (2, 3, 7, 9, 5, 3, 3, [1, 1], [1, 1], true),
                (2, 3, 7, 9, 5, 3, 3, [1, 1], [0, 0], false),
                (2, 3, 7, 9, 5, 3, 3, [2, 2], [1, 1], true),
                (2, 3, 7, 9, 5, 3, 3, [2, 2], [0, 0], false),
                (1, 4, 6, 5, 3, 3, 2, [2, 1], [2, 0], true),
            ],
        );
    });
}

#[test]
fn gpu_conv_edge_cases_match_cpu() {
    with_gpu(|gpu| {
        gpu_matches_cpu(
            gpu,
            &[
                (1, 1, 1, 1, 1, 1, 1, [1, 1], [0, 0], true),
                (1, 1, 1, 1, 1, 3, 3, [1, 1], [1, 1], false),
                (3, 1, 5, 4, 1, 3, 3, [1, 1], [1, 1], true),
                (1, 1, 6, 6, 4, 3, 3, [2, 2], [1, 1], true),
                (2, 5, 1, 1, 3, 1, 1, [1, 1], [0, 0], true),
                // Windows larger than the 16-deep K step (KH KW = 25, 49): the kernel's (ci, kh, kw)
                // counters carry across rows of the window.
                (1, 2, 5, 5, 2, 5, 5, [3, 3], [3, 3], true),
                (2, 3, 9, 8, 4, 7, 7, [2, 2], [3, 3], false),
            ],
        );
    });
}

#[test]
fn gpu_conv_non_tile_multiples_match_cpu() {
    with_gpu(|gpu| {
        // Cout 70 = 64 + 6 and 13 x 11 = 143 pixels: partial tiles on both axes; K = 54 is not a
        // multiple of the 16-deep K step; the batch of 2 makes a column tile straddle two images.
        gpu_matches_cpu(
            gpu,
            &[
                (2, 6, 13, 11, 70, 3, 3, [1, 1], [1, 1], true),
                (1, 6, 13, 11, 70, 1, 1, [1, 1], [0, 0], false),
            ],
        );
    });
}

#[test]
fn gpu_conv_larger_layer_matches_cpu() {
    with_gpu(|gpu| {
        // 2 x 64 x 576 x 256 multiply-adds, about 19 MFLOP per dtype.
        gpu_matches_cpu(gpu, &[(1, 64, 16, 16, 64, 3, 3, [1, 1], [1, 1], true)]);
    });
}

#[test]
fn bad_inputs_are_errors() {
    let t = |shape: &[usize], dtype: DType| {
        let n: usize = shape.iter().product();
        Tensor::from_f32(&Device::Cpu, shape, dtype, &vec![0.5; n]).unwrap()
    };
    let x = t(&[1, 3, 5, 5], DType::F32);
    let w = t(&[4, 3, 3, 3], DType::F32);
    let o = Conv2dOptions::default();
    let err = |r: Result<Tensor>| r.unwrap_err().to_string();

    let e = err(conv2d(&x, &t(&[4, 2, 3, 3], DType::F32), None, o));
    assert!(
        e.contains("conv2d") && e.contains("[4, 2, 3, 3]") && e.contains("[1, 3, 5, 5]"),
        "{e}"
    );
    assert!(e.contains("input channels"), "{e}");

    let e = err(conv2d(&x, &t(&[4, 3, 7, 7], DType::F32), None, o));
    assert!(
        e.contains("conv2d") && e.contains("larger") && e.contains("[4, 3, 7, 7]"),
        "{e}"
    );
    // ... but padding can make room, as in torch: (5 + 2 - 7) / 1 + 1 = 1.
    let ok = conv2d(
        &x,
        &t(&[4, 3, 7, 7], DType::F32),
        None,
        Conv2dOptions {
            stride: 1,
            padding: 1,
        },
    );
    assert_eq!(ok.unwrap().shape(), [1, 4, 1, 1]);

    let e = err(conv2d(&x, &w, Some(&t(&[5], DType::F32)), o));
    assert!(
        e.contains("conv2d")
            && e.contains("bias")
            && e.contains("[5]")
            && e.contains("[4, 3, 3, 3]"),
        "{e}"
    );

    let e = err(conv2d(&t(&[3, 5, 5], DType::F32), &w, None, o));
    assert!(
        e.contains("conv2d") && e.contains("rank 4") && e.contains("[3, 5, 5]"),
        "{e}"
    );
    let e = err(conv2d(&x, &t(&[4, 3, 9], DType::F32), None, o));
    assert!(
        e.contains("conv2d") && e.contains("weight") && e.contains("[4, 3, 9]"),
        "{e}"
    );

    let e = err(conv2d(
        &x,
        &w,
        None,
        Conv2dOptions {
            stride: 0,
            padding: 0,
        },
    ));
    assert!(
        e.contains("conv2d") && e.contains("stride") && e.contains("[1, 3, 5, 5]"),
        "{e}"
    );

    let e = err(conv2d(&x, &t(&[4, 3, 3, 3], DType::F16), None, o));
    assert!(
        e.contains("conv2d") && e.contains("f16") && e.contains("f32"),
        "{e}"
    );
    let e = err(conv2d(&x, &w, Some(&t(&[4], DType::F16)), o));
    assert!(e.contains("conv2d") && e.contains("bias"), "{e}");

    let e = err(conv2d(&t(&[0, 3, 5, 5], DType::F32), &w, None, o));
    assert!(
        e.contains("conv2d") && e.contains("zero-size") && e.contains("[0, 3, 5, 5]"),
        "{e}"
    );
    let e = err(conv2d(&x, &t(&[0, 3, 3, 3], DType::F32), None, o));
    assert!(e.contains("conv2d") && e.contains("zero-size"), "{e}");

    let ids = Tensor::from_u32(&Device::Cpu, &[1, 1, 1, 1], &[1]).unwrap();
    assert!(err(conv2d(&ids, &ids, None, o)).contains("u32"));
}

#[test]
fn tensors_on_different_devices_are_an_error() {
    with_gpu(|gpu| {
        let (cx, _) = random_pair(gpu, &[1, 2, 3, 3], DType::F32, 1);
        let (_, gw) = random_pair(gpu, &[1, 2, 1, 1], DType::F32, 2);
        let e = conv2d(&cx, &gw, None, Conv2dOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("conv2d"), "{e}");
    });
}
