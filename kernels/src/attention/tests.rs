//! The flash attention kernel against the CPU backend, and the CPU backend against a naive
//! scores-softmax-sum written out here.
//!
//! Tolerances (|got - want| <= atol + rtol * |want|): f32 atol 1e-4, rtol 1e-4; f16 atol 1e-2,
//! rtol 1e-2. Both sides read identical inputs and accumulate in f32, so they differ only by
//! summation order (and, for f16, by one rounding of the output).

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{assert_close, random_pair, with_gpu, Rng};

const DTYPES: [DType; 2] = [DType::F32, DType::F16];

fn tol(dtype: DType) -> (f32, f32) {
    match dtype {
        DType::F16 => (1e-2, 1e-2),
        _ => (1e-4, 1e-4),
    }
}

#[derive(Clone, Debug, Default)]
struct Case {
    b: usize,
    lq: usize,
    lk: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    causal: bool,
    mask: Option<Vec<u32>>,
    scale: Option<f32>,
}

fn case(b: usize, lq: usize, lk: usize, hq: usize, hkv: usize, d: usize) -> Case {
    Case {
        b,
        lq,
        lk,
        hq,
        hkv,
        d,
        ..Default::default()
    }
}

/// Runs a case on the CPU and the GPU in both dtypes, compares, and returns the GPU's f32 output.
fn compare(gpu: &Device, c: &Case, seed: u64) -> Vec<f32> {
    let mut gpu_f32 = Vec::new();
    for dtype in DTYPES {
        let (cq, gq) = random_pair(gpu, &[c.b, c.lq, c.hq, c.d], dtype, seed);
        let (ck, gk) = random_pair(gpu, &[c.b, c.lk, c.hkv, c.d], dtype, seed + 1);
        let (cv, gv) = random_pair(gpu, &[c.b, c.lk, c.hkv, c.d], dtype, seed + 2);
        let masks = c.mask.as_ref().map(|m| {
            let cpu = Tensor::from_u32(&Device::Cpu, &[c.b, c.lk], m).unwrap();
            let dev = cpu.to_device(gpu).unwrap();
            (cpu, dev)
        });
        let opts = |mask| AttentionOptions {
            scale: c.scale,
            causal: c.causal,
            key_padding_mask: mask,
        };
        let want = attention(&cq, &ck, &cv, opts(masks.as_ref().map(|m| &m.0))).unwrap();
        let got = attention(&gq, &gk, &gv, opts(masks.as_ref().map(|m| &m.1))).unwrap();
        assert_eq!(got.shape(), [c.b, c.lq, c.hq, c.d]);
        assert_eq!(got.dtype(), dtype);
        let got = got.to_vec_f32().unwrap();
        let (atol, rtol) = tol(dtype);
        assert_close(
            &format!("{dtype} {c:?}"),
            &got,
            &want.to_vec_f32().unwrap(),
            atol,
            rtol,
        );
        if dtype == DType::F32 {
            gpu_f32 = got;
        }
    }
    gpu_f32
}

/// Textbook attention on f32 vectors: the full score matrix, masked entries set to -inf, softmax
/// per row (all-masked rows give zeros), then the weighted sum of values.
fn naive(q: &[f32], k: &[f32], v: &[f32], c: &Case, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0; c.b * c.lq * c.hq * c.d];
    let qi = |b: usize, i: usize, h: usize, x: usize| ((b * c.lq + i) * c.hq + h) * c.d + x;
    let ki = |b: usize, j: usize, h: usize, x: usize| ((b * c.lk + j) * c.hkv + h) * c.d + x;
    for b in 0..c.b {
        for h in 0..c.hq {
            let hk = h / (c.hq / c.hkv);
            let mut s = vec![vec![f32::NEG_INFINITY; c.lk]; c.lq];
            for (i, row) in s.iter_mut().enumerate() {
                for (j, e) in row.iter_mut().enumerate() {
                    let causal_ok = !c.causal || j as i64 <= i as i64 + c.lk as i64 - c.lq as i64;
                    let mask_ok = c.mask.as_ref().is_none_or(|m| m[b * c.lk + j] == 1);
                    if causal_ok && mask_ok {
                        *e = (0..c.d)
                            .map(|x| q[qi(b, i, h, x)] * k[ki(b, j, hk, x)])
                            .sum::<f32>()
                            * scale;
                    }
                }
            }
            for (i, row) in s.iter().enumerate() {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                if max == f32::NEG_INFINITY {
                    continue;
                }
                let e: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                for x in 0..c.d {
                    out[qi(b, i, h, x)] = (0..c.lk).map(|j| e[j] / sum * v[ki(b, j, hk, x)]).sum();
                }
            }
        }
    }
    out
}

#[test]
fn cpu_matches_naive_attention() {
    let base = case(2, 4, 6, 4, 2, 3);
    let mut causal = base.clone();
    causal.causal = true;
    let mut masked = base.clone();
    masked.mask = Some(vec![1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    masked.scale = Some(0.7);
    let mut both = masked.clone();
    both.causal = true;
    // Lq > Lk with the causal mask: the first rows see no key at all.
    let mut long_q = case(1, 5, 3, 2, 1, 3);
    long_q.causal = true;
    for (n, c) in [base, causal, masked, both, long_q].into_iter().enumerate() {
        let mut rng = Rng::new(40 + n as u64);
        let q = rng.normals(c.b * c.lq * c.hq * c.d);
        let k = rng.normals(c.b * c.lk * c.hkv * c.d);
        let v = rng.normals(c.b * c.lk * c.hkv * c.d);
        let t = |x: &[f32], l, h| Tensor::from_f32(&Device::Cpu, &[c.b, l, h, c.d], DType::F32, x);
        let mask = c
            .mask
            .as_ref()
            .map(|m| Tensor::from_u32(&Device::Cpu, &[c.b, c.lk], m).unwrap());
        let got = attention(
            &t(&q, c.lq, c.hq).unwrap(),
            &t(&k, c.lk, c.hkv).unwrap(),
            &t(&v, c.lk, c.hkv).unwrap(),
            AttentionOptions {
                scale: c.scale,
                causal: c.causal,
                key_padding_mask: mask.as_ref(),
            },
        )
        .unwrap()
        .to_vec_f32()
        .unwrap();
        let scale = c.scale.unwrap_or(1.0 / (c.d as f32).sqrt());
        assert_close(
            &format!("{c:?}"),
            &got,
            &naive(&q, &k, &v, &c, scale),
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn cpu_single_key_returns_its_value() {
    // With one visible key the softmax weight is exactly 1.
    let q = Tensor::from_f32(&Device::Cpu, &[1, 1, 1, 2], DType::F32, &[3.0, -1.0]).unwrap();
    let k = Tensor::from_f32(&Device::Cpu, &[1, 1, 1, 2], DType::F32, &[0.5, 2.0]).unwrap();
    let v = Tensor::from_f32(&Device::Cpu, &[1, 1, 1, 2], DType::F32, &[7.0, -4.0]).unwrap();
    let out = attention(&q, &k, &v, Default::default()).unwrap();
    assert_eq!(out.to_vec_f32().unwrap(), [7.0, -4.0]);
}

#[test]
fn tiles_fit_workgroup_memory() {
    for dim in (8..=MAX_HEAD_DIM).step_by(8) {
        let (bq, bk) = tiles(dim);
        let words = bq * dim + bk * (dim + 1) + bq * bk;
        assert!(words * 4 <= 16384, "dim {dim}: {words} words");
        assert!(bk >= 1 && 64 % bq == 0 && dim % (64 / bq) == 0, "dim {dim}");
    }
    assert_eq!(tiles(64), (16, 32));
    assert_eq!(tiles(128), (16, 14));
}

#[test]
fn gpu_head_dims() {
    with_gpu(|gpu| {
        // 37 is not a multiple of any tile size; 3 and 200 are not multiples of 8.
        for (n, d) in [40, 64, 80, 128, 160, 3, 200].into_iter().enumerate() {
            compare(gpu, &case(1, 37, 37, 2, 2, d), 100 + 10 * n as u64);
        }
    });
}

#[test]
fn gpu_cross_attention_and_tiny_shapes() {
    with_gpu(|gpu| {
        compare(gpu, &case(2, 50, 77, 2, 2, 64), 200);
        compare(gpu, &case(1, 1, 1, 1, 1, 8), 210);
        compare(gpu, &case(1, 3, 1, 1, 1, 256), 220);
    });
}

#[test]
fn gpu_causal() {
    with_gpu(|gpu| {
        let shapes = [
            case(2, 37, 37, 2, 1, 64),
            case(1, 1, 45, 4, 2, 64), // decoding one token against a KV cache
            case(1, 20, 45, 2, 2, 80), // a chunk appended to a cache
            case(1, 10, 4, 2, 2, 40), // Lq > Lk: the first rows see nothing
        ];
        for (n, mut c) in shapes.into_iter().enumerate() {
            c.causal = true;
            let got = compare(gpu, &c, 300 + 10 * n as u64);
            if c.lq > c.lk {
                let blind = (c.lq - c.lk) * c.hq * c.d;
                assert!(got[..blind].iter().all(|&x| x == 0.0), "{c:?}");
            }
        }
    });
}

#[test]
fn gpu_key_padding_mask() {
    with_gpu(|gpu| {
        let lk = 45;
        let mut mask: Vec<u32> = (0..lk).map(|j| u32::from(j % 3 != 1 && j < 40)).collect();
        mask.extend(std::iter::repeat_n(0, lk)); // batch 1 is all padding
        let mut c = case(2, 19, lk, 2, 2, 64);
        c.mask = Some(mask);
        for causal in [false, true] {
            c.causal = causal;
            let got = compare(gpu, &c, 400);
            let half = got.len() / 2;
            assert!(
                got[half..].iter().all(|&x| x == 0.0),
                "padded batch gives zeros"
            );
            assert!(got[..half].iter().any(|&x| x != 0.0));
        }
    });
}

#[test]
fn gpu_grouped_query_attention() {
    with_gpu(|gpu| {
        compare(gpu, &case(2, 33, 33, 8, 2, 40), 500);
        let mut c = case(1, 17, 29, 8, 2, 128);
        c.causal = true;
        compare(gpu, &c, 510);
    });
}

#[test]
fn gpu_larger_sequence() {
    with_gpu(|gpu| {
        compare(gpu, &case(1, 300, 300, 1, 1, 64), 600);
        // Unscaled scores (std ~8) make the running max move a lot: exercises the rescaling.
        let mut c = case(1, 70, 150, 1, 1, 64);
        c.scale = Some(1.0);
        compare(gpu, &c, 610);
    });
}

#[test]
fn gpu_rejects_head_dims_over_the_kernel_limit() {
    with_gpu(|gpu| {
        let (_, q) = random_pair(gpu, &[1, 2, 1, 264], DType::F32, 1);
        let err = attention(&q, &q, &q, Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("attention") && err.contains("264"), "{err}");
    });
}

#[test]
fn bad_inputs_are_errors() {
    let t = |shape: &[usize], dtype| {
        Tensor::from_f32(
            &Device::Cpu,
            shape,
            dtype,
            &vec![0.5; shape.iter().product()],
        )
        .unwrap()
    };
    let q = t(&[2, 5, 4, 8], DType::F32);
    let k = t(&[2, 7, 2, 8], DType::F32);
    let expect = |r: Result<Tensor>, parts: &[&str]| {
        let err = r.unwrap_err().to_string();
        assert!(err.contains("attention"), "{err}");
        for p in parts {
            assert!(err.contains(p), "`{p}` missing from: {err}");
        }
    };
    let none = AttentionOptions::default;
    assert!(attention(&q, &k, &k, none()).is_ok());
    let k6 = t(&[2, 7, 2, 6], DType::F32);
    expect(
        attention(&q, &k6, &k6, none()),
        &["[2, 5, 4, 8]", "[2, 7, 2, 6]"],
    );
    let k3 = t(&[2, 7, 3, 8], DType::F32);
    expect(
        attention(&q, &k3, &k3, none()),
        &["[2, 5, 4, 8]", "[2, 7, 3, 8]"],
    );
    let v = t(&[2, 6, 2, 8], DType::F32);
    expect(
        attention(&q, &k, &v, none()),
        &["[2, 7, 2, 8]", "[2, 6, 2, 8]"],
    );
    let kb = t(&[1, 7, 2, 8], DType::F32);
    expect(
        attention(&q, &kb, &kb, none()),
        &["[2, 5, 4, 8]", "[1, 7, 2, 8]"],
    );
    let kh = t(&[2, 7, 2, 8], DType::F16);
    expect(attention(&q, &kh, &kh, none()), &["f16"]);
    let flat = t(&[2, 5, 32], DType::F32);
    expect(attention(&flat, &k, &k, none()), &["[2, 5, 32]"]);
    let empty = t(&[2, 0, 4, 8], DType::F32);
    expect(
        attention(&empty, &k, &k, none()),
        &["zero-size", "[2, 0, 4, 8]"],
    );
    let bad_mask = Tensor::from_u32(&Device::Cpu, &[2, 6], &[1; 12]).unwrap();
    let opts = AttentionOptions {
        key_padding_mask: Some(&bad_mask),
        ..Default::default()
    };
    expect(attention(&q, &k, &k, opts), &["[2, 6]", "[2, 7, 2, 8]"]);
    let float_mask = t(&[2, 7], DType::F32);
    let opts = AttentionOptions {
        key_padding_mask: Some(&float_mask),
        ..Default::default()
    };
    expect(attention(&q, &k, &k, opts), &["u32"]);
    let ids = Tensor::from_u32(&Device::Cpu, &[2, 5, 4, 8], &[0; 320]).unwrap();
    expect(attention(&ids, &k, &k, none()), &["u32"]);
}
