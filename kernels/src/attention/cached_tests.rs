//! Attention over a KV cache: the CPU backend against a naive per-element f64 reference (and, without
//! a window, against `attention` on the cache prefix with `causal: true`), and the GPU kernels (decode
//! split-K, its combine, prefill) against the CPU.
//!
//! Tolerances (|got - want| <= atol + rtol * |want|): CPU vs the f64 reference 1e-5 + 1e-5 (f32
//! sums of at most 300 terms); GPU vs CPU as the other attention tests, f32 1e-4 + 1e-4 and 1e-2 +
//! 1e-2 when q or the cache is f16 (both sides read identical rounded inputs and accumulate in f32,
//! so they differ by summation order and one rounding of an f16 output).

use kiln_runtime::{DType, Device, Tensor};

use super::cached::{launch, CachedShape};
use super::*;
use crate::testing::{assert_close, Rng};

#[derive(Clone, Copy, Debug)]
struct Case {
    l: usize,
    kv_len: usize,
    capacity: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    window: Option<usize>,
}

fn case(l: usize, kv_len: usize, hq: usize, hkv: usize, d: usize) -> Case {
    Case {
        l,
        kv_len,
        // Rows past kv_len hold garbage that must not be read.
        capacity: kv_len + 3,
        hq,
        hkv,
        d,
        window: None,
    }
}

struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn inputs(c: &Case, seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let mut cache = |n: usize| {
        let mut x = rng.normals(n);
        let used = c.kv_len * c.hkv * c.d;
        x[used..].iter_mut().for_each(|v| *v = 1.0e4);
        x
    };
    let k = cache(c.capacity * c.hkv * c.d);
    let v = cache(c.capacity * c.hkv * c.d);
    let q = Rng::new(seed + 9).normals(c.l * c.hq * c.d);
    Inputs { q, k, v }
}

fn tensors(device: &Device, c: &Case, x: &Inputs, q: DType, kv: DType) -> [Tensor; 3] {
    let cache = [c.capacity, c.hkv, c.d];
    [
        Tensor::from_f32(device, &[c.l, c.hq, c.d], q, &x.q).unwrap(),
        Tensor::from_f32(device, &cache, kv, &x.k).unwrap(),
        Tensor::from_f32(device, &cache, kv, &x.v).unwrap(),
    ]
}

fn opts(c: &Case) -> CachedAttentionOptions {
    CachedAttentionOptions {
        scale: None,
        sliding_window: c.window,
    }
}

/// The definition, in f64: every (row, head, key) decides visibility on its own.
fn naive(c: &Case, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
    let scale = 1.0 / (c.d as f64).sqrt();
    let mut out = vec![0.0f32; c.l * c.hq * c.d];
    for i in 0..c.l {
        let pos = c.kv_len - c.l + i;
        for h in 0..c.hq {
            let hk = h / (c.hq / c.hkv);
            let qrow = &q[(i * c.hq + h) * c.d..][..c.d];
            let krow = |j: usize| (j * c.hkv + hk) * c.d;
            let visible = |j: usize| j <= pos && c.window.is_none_or(|w| pos - j < w);
            let scores: Vec<f64> = (0..c.kv_len)
                .map(|j| {
                    if !visible(j) {
                        return f64::NEG_INFINITY;
                    }
                    let dot: f64 = (0..c.d)
                        .map(|x| qrow[x] as f64 * k[krow(j) + x] as f64)
                        .sum();
                    dot * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for x in 0..c.d {
                let o: f64 = (0..c.kv_len).map(|j| e[j] * v[krow(j) + x] as f64).sum();
                out[(i * c.hq + h) * c.d + x] = (o / sum) as f32;
            }
        }
    }
    out
}

fn rounded(values: &[f32], dtype: DType) -> Vec<f32> {
    Tensor::from_f32(&Device::Cpu, &[values.len()], dtype, values)
        .unwrap()
        .to_vec_f32()
        .unwrap()
}

#[test]
fn cpu_matches_naive_reference() {
    let mut cases = vec![
        case(1, 1, 4, 2, 32),
        case(3, 7, 8, 1, 40),
        case(8, 33, 4, 4, 64),
        case(9, 300, 4, 2, 16),
        case(37, 37, 4, 2, 8),
    ];
    for w in [1, 5, 32] {
        cases.push(Case {
            window: Some(w),
            ..case(9, 40, 4, 2, 16)
        });
    }
    for (n, c) in cases.iter().enumerate() {
        let x = inputs(c, 100 + n as u64);
        for (qd, kvd) in [
            (DType::F32, DType::F32),
            (DType::F32, DType::F16),
            (DType::F16, DType::F16),
        ] {
            let [q, k, v] = tensors(&Device::Cpu, c, &x, qd, kvd);
            let got = cached_attention(&q, &k, &v, c.kv_len, opts(c)).unwrap();
            assert_eq!(got.shape(), [c.l, c.hq, c.d]);
            assert_eq!(got.dtype(), qd);
            let want = naive(
                c,
                &rounded(&x.q, qd),
                &rounded(&x.k, kvd),
                &rounded(&x.v, kvd),
            );
            // An f16 output rounds once: 1e-3 relative.
            let (atol, rtol) = if qd == DType::F16 {
                (1e-3, 1e-3)
            } else {
                (1e-5, 1e-5)
            };
            assert_close(
                &format!("{c:?} q {qd} cache {kvd}"),
                &got.to_vec_f32().unwrap(),
                &want,
                atol,
                rtol,
            );
        }
    }
}

#[test]
fn cpu_matches_causal_attention_on_the_cache_prefix() {
    for c in [case(1, 9, 4, 2, 32), case(12, 20, 8, 2, 24)] {
        let x = inputs(&c, 7);
        let [q, k, v] = tensors(&Device::Cpu, &c, &x, DType::F32, DType::F32);
        let got = cached_attention(&q, &k, &v, c.kv_len, opts(&c)).unwrap();
        let prefix = |t: &Tensor| {
            let used = c.kv_len * c.hkv * c.d;
            let vals = &t.to_vec_f32().unwrap()[..used];
            Tensor::from_f32(&Device::Cpu, &[1, c.kv_len, c.hkv, c.d], DType::F32, vals).unwrap()
        };
        let want = attention(
            &q.reshape(&[1, c.l, c.hq, c.d]).unwrap(),
            &prefix(&k),
            &prefix(&v),
            AttentionOptions {
                causal: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_close(
            &format!("{c:?}"),
            &got.to_vec_f32().unwrap(),
            &want.to_vec_f32().unwrap(),
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn bad_inputs_are_errors() {
    let cpu = Device::Cpu;
    let t = |shape: &[usize], dtype| Tensor::zeros(&cpu, shape, dtype).unwrap();
    let q = t(&[2, 4, 8], DType::F32);
    let cache = t(&[5, 2, 8], DType::F16);
    let o = CachedAttentionOptions::default();
    let err = |r: kiln_runtime::Result<Tensor>| {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("cached_attention"), "{e}");
        e
    };
    let e = err(cached_attention(&q, &cache, &cache, 6, o));
    assert!(e.contains("kv_len 6") && e.contains("[5, 2, 8]"), "{e}");
    let e = err(cached_attention(&q, &cache, &cache, 1, o));
    assert!(e.contains("kv_len 1") && e.contains("[2, 4, 8]"), "{e}");
    let e = err(cached_attention(
        &q,
        &cache,
        &t(&[5, 2, 8], DType::F32),
        3,
        o,
    ));
    assert!(e.contains("f16") && e.contains("f32"), "{e}");
    let e = err(cached_attention(
        &q,
        &cache,
        &t(&[6, 2, 8], DType::F16),
        3,
        o,
    ));
    assert!(e.contains("[6, 2, 8]"), "{e}");
    let e = err(cached_attention(
        &t(&[2, 3, 8], DType::F32),
        &cache,
        &cache,
        3,
        o,
    ));
    assert!(e.contains("multiple"), "{e}");
    let e = err(cached_attention(
        &t(&[2, 4, 6], DType::F32),
        &cache,
        &cache,
        3,
        o,
    ));
    assert!(e.contains("head dim"), "{e}");
    let e = err(cached_attention(
        &t(&[8, 8], DType::F32),
        &cache,
        &cache,
        3,
        o,
    ));
    assert!(e.contains("rank 3"), "{e}");
    let e = err(cached_attention(
        &t(&[0, 4, 8], DType::F32),
        &cache,
        &cache,
        3,
        o,
    ));
    assert!(e.contains("zero-size"), "{e}");
    let ids = Tensor::from_u32(&cpu, &[2, 4, 8], &[0; 64]).unwrap();
    let e = err(cached_attention(&ids, &cache, &cache, 3, o));
    assert!(e.contains("u32"), "{e}");
    let windowless = CachedAttentionOptions {
        sliding_window: Some(0),
        ..o
    };
    let e = err(cached_attention(&q, &cache, &cache, 3, windowless));
    assert!(e.contains("window"), "{e}");
    let nan = CachedAttentionOptions {
        scale: Some(f32::NAN),
        ..o
    };
    let e = err(cached_attention(&q, &cache, &cache, 3, nan));
    assert!(e.contains("scale"), "{e}");
}

/// GPU kernels against the CPU for every dtype pairing, through the public op and, with
/// `chunk_len`, through the split path with that chunk size.
fn compare_gpu(gpu: &Device, c: &Case, seed: u64, chunk_len: Option<usize>) {
    let x = inputs(c, seed);
    for (qd, kvd) in [
        (DType::F32, DType::F32),
        (DType::F32, DType::F16),
        (DType::F16, DType::F16),
    ] {
        let [cq, ck, cv] = tensors(&Device::Cpu, c, &x, qd, kvd);
        let [gq, gk, gv] = tensors(gpu, c, &x, qd, kvd);
        let want = cached_attention(&cq, &ck, &cv, c.kv_len, opts(c)).unwrap();
        let got = match chunk_len {
            None => cached_attention(&gq, &gk, &gv, c.kv_len, opts(c)).unwrap(),
            Some(len) => {
                let s = CachedShape {
                    l: c.l,
                    kv_len: c.kv_len,
                    hq: c.hq,
                    hkv: c.hkv,
                    d: c.d,
                };
                let ctx = crate::common::gpu(gpu).unwrap();
                let scale = 1.0 / (c.d as f32).sqrt();
                launch(
                    ctx,
                    [&gq, &gk, &gv],
                    &s,
                    scale,
                    c.window.unwrap_or(0),
                    Some(len),
                )
                .unwrap()
            }
        };
        assert_eq!(got.shape(), [c.l, c.hq, c.d]);
        assert_eq!(got.dtype(), qd);
        let f16 = qd == DType::F16 || kvd == DType::F16;
        let (atol, rtol) = if f16 { (1e-2, 1e-2) } else { (1e-4, 1e-4) };
        assert_close(
            &format!("{c:?} q {qd} cache {kvd} chunk {chunk_len:?}"),
            &got.to_vec_f32().unwrap(),
            &want.to_vec_f32().unwrap(),
            atol,
            rtol,
        );
    }
}

#[test]
fn gpu_decode_matches_cpu() {
    crate::testing::with_gpu(|gpu| {
        let cases = [
            case(1, 1, 4, 2, 32),
            case(1, 7, 8, 1, 40),
            case(3, 33, 4, 4, 64),
            case(8, 300, 4, 2, 128),
            Case {
                window: Some(20),
                ..case(1, 300, 4, 2, 32)
            },
            Case {
                window: Some(5),
                ..case(8, 33, 8, 1, 40)
            },
        ];
        for (n, c) in cases.iter().enumerate() {
            compare_gpu(gpu, c, 200 + n as u64, None);
        }
    });
}

#[test]
fn gpu_split_path_with_small_chunks_matches_cpu() {
    crate::testing::with_gpu(|gpu| {
        // Chunks of 16 keys: a short last chunk, chunks wholly outside a window (partials with no
        // visible key) and, for the 9-row block, the split path outside decode.
        let cases = [
            case(1, 33, 4, 2, 32),
            Case {
                window: Some(7),
                ..case(3, 61, 4, 2, 40)
            },
            case(9, 40, 4, 4, 16),
        ];
        for (n, c) in cases.iter().enumerate() {
            compare_gpu(gpu, c, 300 + n as u64, Some(16));
        }
    });
}

#[test]
fn gpu_prefill_matches_cpu() {
    crate::testing::with_gpu(|gpu| {
        let cases = [
            case(9, 9, 4, 2, 32),
            case(37, 60, 8, 1, 40),
            case(12, 300, 4, 4, 64),
            Case {
                window: Some(10),
                ..case(37, 50, 4, 2, 128)
            },
        ];
        for (n, c) in cases.iter().enumerate() {
            compare_gpu(gpu, c, 400 + n as u64, None);
        }
    });
}
