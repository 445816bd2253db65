//! RoPE: the CPU against closed forms in f64 (identity at position 0, norm-preserving rotations, both
//! pairings), the GPU against the CPU. `rope_table`: the CPU against the definition in f64 and
//! against `rope_at` (bit for bit, given the table `rope_at` computes), the GPU against the CPU; its
//! tolerances are stated at each test.
//!
//! Tolerances: the angle at position p is an f32 product, good to about p * 1e-7 rad, and the GPU's
//! exp2/sin/cos add a few ulps, so GPU vs CPU f32 uses rtol 1e-5 and atol 3e-5 + 1.5e-7 * p_max *
//! |x|_max (a rotated value's error is the angle error times the pair's norm). Measured on llvmpipe:
//! 2e-5 at positions ~100, 1.1e-3 at ~8000 (|x| <= 3.2; the CPU's own f32 error vs f64 there is 5e-4).
//! f16 uses the default 2e-2 abs + 1e-2 rel.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{assert_close, random_pair, tolerance, with_gpu, Rng};

const STYLES: [RopeStyle; 2] = [RopeStyle::HalfSplit, RopeStyle::Interleaved];

/// RoPE in f64 from the definition, with pairs chosen by `style`.
fn naive(x: &[f32], shape: [usize; 4], offset: usize, theta: f64, style: RopeStyle) -> Vec<f32> {
    let [_, seq_len, heads, dim] = shape;
    let mut out = vec![0.0; x.len()];
    for (row, (o, v)) in out.chunks_mut(dim).zip(x.chunks(dim)).enumerate() {
        let pos = (offset + (row / heads) % seq_len) as f64;
        for j in 0..dim / 2 {
            let angle = pos * theta.powf(-2.0 * j as f64 / dim as f64);
            let (i0, i1) = match style {
                RopeStyle::HalfSplit => (j, j + dim / 2),
                RopeStyle::Interleaved => (2 * j, 2 * j + 1),
            };
            let (a, b) = (v[i0] as f64, v[i1] as f64);
            o[i0] = (a * angle.cos() - b * angle.sin()) as f32;
            o[i1] = (b * angle.cos() + a * angle.sin()) as f32;
        }
    }
    out
}

fn cpu_tensor(shape: &[usize], values: &[f32]) -> Tensor {
    Tensor::from_f32(&Device::Cpu, shape, DType::F32, values).unwrap()
}

#[test]
fn cpu_position_zero_is_identity_and_rotations_keep_pair_norms() {
    let values = Rng::new(1).normals(2 * 3 * 10);
    let x = cpu_tensor(&[2, 1, 3, 10], &values);
    for style in STYLES {
        let y = rope(&x, 0, 10000.0, style).unwrap().to_vec_f32().unwrap();
        assert_eq!(y, values, "{style:?} at position 0");
        let y = rope(&x, 37, 10000.0, style).unwrap().to_vec_f32().unwrap();
        for (o, v) in y.chunks(10).zip(values.chunks(10)) {
            for j in 0..5 {
                let (i0, i1) = match style {
                    RopeStyle::HalfSplit => (j, j + 5),
                    RopeStyle::Interleaved => (2 * j, 2 * j + 1),
                };
                let before = v[i0].hypot(v[i1]);
                let after = o[i0].hypot(o[i1]);
                assert!(
                    (before - after).abs() <= 1e-5 * (1.0 + before),
                    "{style:?} pair {j}: {before} -> {after}"
                );
            }
        }
    }
}

#[test]
fn cpu_matches_closed_form_for_both_pairings() {
    // x = [1, 2, 3, 4] at position 1 with theta 100: inv_freq = [1, 0.1].
    let x = cpu_tensor(&[1, 1, 1, 4], &[1., 2., 3., 4.]);
    let (c1, s1, c2, s2) = (1f64.cos(), 1f64.sin(), 0.1f64.cos(), 0.1f64.sin());
    let half_split = [
        1. * c1 - 3. * s1,
        2. * c2 - 4. * s2,
        3. * c1 + 1. * s1,
        4. * c2 + 2. * s2,
    ];
    let interleaved = [
        1. * c1 - 2. * s1,
        2. * c1 + 1. * s1,
        3. * c2 - 4. * s2,
        4. * c2 + 3. * s2,
    ];
    for (style, want) in [
        (RopeStyle::HalfSplit, half_split),
        (RopeStyle::Interleaved, interleaved),
    ] {
        // Position 1 is token 1 of a two-token sequence here, so the offset path is exercised too.
        let two = cpu_tensor(&[1, 2, 1, 4], &[0., 0., 0., 0., 1., 2., 3., 4.]);
        let got = rope(&two, 0, 100.0, style).unwrap().to_vec_f32().unwrap();
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        assert_close(&format!("{style:?} token 1"), &got[4..], &want, 1e-6, 1e-6);
        let got = rope(&x, 1, 100.0, style).unwrap().to_vec_f32().unwrap();
        assert_close(&format!("{style:?} offset 1"), &got, &want, 1e-6, 1e-6);
    }
    // Random data, several tokens and heads, against the f64 definition. Positions <= 12, so the
    // f32 angle is good to ~1e-6: atol 1e-5.
    let shape = [2, 4, 3, 8];
    let values = Rng::new(2).normals(shape.iter().product());
    let x = cpu_tensor(&shape, &values);
    for style in STYLES {
        let got = rope(&x, 9, 500.0, style).unwrap().to_vec_f32().unwrap();
        let want = naive(&values, shape, 9, 500.0, style);
        assert_close(&format!("{style:?} random"), &got, &want, 1e-5, 1e-5);
    }
}

#[test]
fn gpu_matches_cpu() {
    with_gpu(|gpu| {
        // (shape, position offset): a single pair, odd L and H, a common head size at a later
        // position, a large head dimension, and positions in the thousands.
        let cases: [(&[usize], usize); 5] = [
            (&[1, 1, 1, 2], 0),
            (&[2, 5, 3, 6], 3),
            (&[1, 7, 2, 128], 100),
            (&[1, 2, 1, 4096], 1),
            (&[1, 3, 2, 64], 8000),
        ];
        for dtype in [DType::F32, DType::F16] {
            for (i, &(shape, offset)) in cases.iter().enumerate() {
                let (cpu, dev) = random_pair(gpu, shape, dtype, 300 + i as u64);
                let max_x = cpu
                    .to_vec_f32()
                    .unwrap()
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()));
                let max_pos = (offset + shape[1]) as f32;
                let (atol, rtol) = match dtype {
                    DType::F32 => (3e-5 + 1.5e-7 * max_pos * max_x, 1e-5),
                    _ => tolerance(dtype),
                };
                for style in STYLES {
                    let want = rope(&cpu, offset, 10000.0, style).unwrap();
                    let got = rope(&dev, offset, 10000.0, style).unwrap();
                    assert_eq!(got.shape(), want.shape());
                    assert_eq!(got.dtype(), dtype);
                    assert_close(
                        &format!("rope {style:?} {dtype} {shape:?} offset {offset}"),
                        &got.to_vec_f32().unwrap(),
                        &want.to_vec_f32().unwrap(),
                        atol,
                        rtol,
                    );
                }
            }
        }
    });
}

#[test]
fn bad_inputs_are_errors() {
    let odd = cpu_tensor(&[1, 2, 1, 3], &[0.0; 6]);
    let err = rope(&odd, 0, 10000.0, RopeStyle::HalfSplit)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rope") && err.contains("even") && err.contains("[1, 2, 1, 3]"),
        "{err}"
    );
    let flat = cpu_tensor(&[2, 4], &[0.0; 8]);
    let err = rope(&flat, 0, 10000.0, RopeStyle::HalfSplit)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rope") && err.contains("rank 4") && err.contains("[2, 4]"),
        "{err}"
    );
    let empty = cpu_tensor(&[1, 0, 1, 4], &[]);
    let err = rope(&empty, 0, 10000.0, RopeStyle::HalfSplit)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rope") && err.contains("zero-size"), "{err}");
    let x = cpu_tensor(&[1, 1, 1, 2], &[1.0, 2.0]);
    let err = rope(&x, 0, 0.0, RopeStyle::Interleaved)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rope") && err.contains("theta"), "{err}");
    let ids = Tensor::from_u32(&Device::Cpu, &[1, 1, 1, 2], &[1, 2]).unwrap();
    let err = rope(&ids, 0, 10000.0, RopeStyle::HalfSplit)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rope") && err.contains("u32"), "{err}");
}

#[test]
fn cpu_rope_at_with_consecutive_positions_equals_rope_exactly() {
    for (shape, offset) in [(vec![2usize, 5, 3, 8], 0usize), (vec![1, 4, 2, 64], 4093)] {
        let values = Rng::new(5).normals(shape.iter().product());
        for dtype in [DType::F32, DType::F16] {
            let x = Tensor::from_f32(&Device::Cpu, &shape, dtype, &values).unwrap();
            let l = shape[1];
            let ids: Vec<u32> = (offset as u32..(offset + l) as u32).collect();
            let positions = Tensor::from_u32(&Device::Cpu, &[l], &ids).unwrap();
            for style in STYLES {
                let want = rope(&x, offset, 10000.0, style).unwrap();
                let got = rope_at(&x, &positions, 10000.0, style).unwrap();
                assert_eq!(got.dtype(), dtype);
                assert_eq!(
                    got.to_bytes().unwrap(),
                    want.to_bytes().unwrap(),
                    "{style:?}"
                );
                // The [L, H, D] form gives the same rows.
                let x3 = x.reshape(&[shape[0] * l, shape[2], shape[3]]).unwrap();
                if shape[0] == 1 {
                    let got3 = rope_at(&x3, &positions, 10000.0, style).unwrap();
                    assert_eq!(got3.shape(), x3.shape());
                    assert_eq!(got3.to_bytes().unwrap(), want.to_bytes().unwrap());
                }
            }
        }
    }
}

#[test]
fn cpu_rope_at_uses_each_tokens_own_position() {
    // Tokens at positions 7, 0, 7: token 1 is unrotated, tokens 0 and 2 match rope at offset 7.
    let shape = [1, 3, 2, 6];
    let values = Rng::new(6).normals(36);
    let x = cpu_tensor(&shape, &values);
    let positions = Tensor::from_u32(&Device::Cpu, &[3], &[7, 0, 7]).unwrap();
    for style in STYLES {
        let got = rope_at(&x, &positions, 500.0, style)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let at7 = naive(&values, shape, 7, 500.0, style);
        let row = 2 * 6;
        assert_close("token 0", &got[..row], &at7[..row], 1e-5, 1e-5);
        assert_eq!(
            got[row..2 * row],
            values[row..2 * row],
            "position 0 is identity"
        );
        // naive puts token 2 at 7 + 2; rebuild its expectation from a one-token naive run.
        let t2 = naive(&values[2 * row..], [1, 1, 2, 6], 7, 500.0, style);
        assert_close("token 2", &got[2 * row..], &t2, 1e-5, 1e-5);
    }
}

#[test]
fn gpu_rope_at_matches_cpu() {
    with_gpu(|gpu| {
        let cases: [(&[usize], &[u32]); 3] = [
            (&[3, 2, 8], &[0, 5, 2]),
            (&[2, 4, 3, 10], &[9, 10, 11, 3]),
            (&[1, 1, 64], &[8000]),
        ];
        for dtype in [DType::F32, DType::F16] {
            for (i, &(shape, ids)) in cases.iter().enumerate() {
                let (cpu, dev) = random_pair(gpu, shape, dtype, 500 + i as u64);
                let cpu_pos = Tensor::from_u32(&Device::Cpu, &[ids.len()], ids).unwrap();
                let dev_pos = cpu_pos.to_device(gpu).unwrap();
                let max_x = cpu
                    .to_vec_f32()
                    .unwrap()
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()));
                let max_pos = *ids.iter().max().unwrap() as f32 + 1.0;
                let (atol, rtol) = match dtype {
                    DType::F32 => (3e-5 + 1.5e-7 * max_pos * max_x, 1e-5),
                    _ => tolerance(dtype),
                };
                for style in STYLES {
                    let want = rope_at(&cpu, &cpu_pos, 10000.0, style).unwrap();
                    let got = rope_at(&dev, &dev_pos, 10000.0, style).unwrap();
                    assert_eq!(got.shape(), shape);
                    assert_eq!(got.dtype(), dtype);
                    assert_close(
                        &format!("rope_at {style:?} {dtype} {shape:?} {ids:?}"),
                        &got.to_vec_f32().unwrap(),
                        &want.to_vec_f32().unwrap(),
                        atol,
                        rtol,
                    );
                }
            }
        }
    });
}

#[test]
fn rope_at_bad_inputs_are_errors() {
    let x = cpu_tensor(&[1, 3, 2, 4], &[0.0; 24]);
    let pos = |ids: &[u32]| Tensor::from_u32(&Device::Cpu, &[ids.len()], ids).unwrap();
    let err = rope_at(&x, &pos(&[0, 1]), 10000.0, RopeStyle::HalfSplit)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rope_at") && err.contains("[2]") && err.contains("[3]"),
        "{err}"
    );
    let floats = cpu_tensor(&[3], &[0.0; 3]);
    let err = rope_at(&x, &floats, 10000.0, RopeStyle::HalfSplit)
        .unwrap_err()
        .to_string();
    assert!(err.contains("positions") && err.contains("u32"), "{err}");
    let flat = cpu_tensor(&[3, 8], &[0.0; 24]);
    let err = rope_at(&flat, &pos(&[0, 1, 2]), 10000.0, RopeStyle::HalfSplit)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[L, H, D]") && err.contains("[3, 8]"), "{err}");
    let odd = cpu_tensor(&[3, 1, 3], &[0.0; 9]);
    let err = rope_at(&odd, &pos(&[0, 1, 2]), 10000.0, RopeStyle::HalfSplit)
        .unwrap_err()
        .to_string();
    assert!(err.contains("even"), "{err}");
    with_gpu(|gpu| {
        let err = rope_at(
            &x.to_device(gpu).unwrap(),
            &pos(&[0, 1, 2]),
            1e4,
            RopeStyle::HalfSplit,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rope_at") && err.contains("device"), "{err}");
    });
}

/// `[L, D/2]` cosine and sine tables of angles uniform in [-4, 4) rad, one per (token, pair).
fn random_table(seq_len: usize, half: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    (0..seq_len * half)
        .map(|_| {
            let angle = 8.0 * rng.uniform() - 4.0;
            (angle.cos(), angle.sin())
        })
        .unzip()
}

/// RoPE from a table in f64: pair `j` of token `l` of every row turns by `(cos, sin)[l, j]`.
fn naive_table(x: &[f32], shape: &[usize], cos: &[f32], sin: &[f32], style: RopeStyle) -> Vec<f32> {
    let [seq_len, heads, dim] = shape[shape.len() - 3..].try_into().unwrap();
    let half = dim / 2;
    let mut out = vec![0.0; x.len()];
    for (row, (o, v)) in out.chunks_mut(dim).zip(x.chunks(dim)).enumerate() {
        let l = (row / heads) % seq_len;
        for j in 0..half {
            let (c, s) = (cos[l * half + j] as f64, sin[l * half + j] as f64);
            let (i0, i1) = match style {
                RopeStyle::HalfSplit => (j, j + half),
                RopeStyle::Interleaved => (2 * j, 2 * j + 1),
            };
            let (a, b) = (v[i0] as f64, v[i1] as f64);
            o[i0] = (a * c - b * s) as f32;
            o[i1] = (b * c + a * s) as f32;
        }
    }
    out
}

fn table_tensors(
    device: &Device,
    seq_len: usize,
    half: usize,
    cos: &[f32],
    sin: &[f32],
) -> [Tensor; 2] {
    [cos, sin].map(|t| {
        Tensor::from_f32(&Device::Cpu, &[seq_len, half], DType::F32, t)
            .unwrap()
            .to_device(device)
            .unwrap()
    })
}

#[test]
fn cpu_rope_table_matches_the_definition() {
    // Against f64 on the same inputs: f32 arithmetic is good to a few ulps of |x| (<= ~4.5 here),
    // so atol 2e-6; f16 outputs are rounded once, half an f16 ulp: rtol 1e-3.
    let cases: [&[usize]; 3] = [&[2, 5, 3, 8], &[7, 1, 2], &[37, 3, 24]];
    for (i, &shape) in cases.iter().enumerate() {
        let [seq_len, _, dim] = shape[shape.len() - 3..].try_into().unwrap();
        let (cos, sin) = random_table(seq_len, dim / 2, 40 + i as u64);
        let [cos_t, sin_t] = table_tensors(&Device::Cpu, seq_len, dim / 2, &cos, &sin);
        let values = Rng::new(50 + i as u64).normals(shape.iter().product());
        for dtype in [DType::F32, DType::F16] {
            let x = Tensor::from_f32(&Device::Cpu, shape, dtype, &values).unwrap();
            let rounded = x.to_vec_f32().unwrap();
            let (atol, rtol) = match dtype {
                DType::F32 => (2e-6, 1e-6),
                _ => (1e-4, 1e-3),
            };
            for style in STYLES {
                let got = rope_table(&x, &cos_t, &sin_t, style).unwrap();
                assert_eq!(got.shape(), shape);
                assert_eq!(got.dtype(), dtype);
                let want = naive_table(&rounded, shape, &cos, &sin, style);
                assert_close(
                    &format!("rope_table {style:?} {dtype} {shape:?}"),
                    &got.to_vec_f32().unwrap(),
                    &want,
                    atol,
                    rtol,
                );
            }
        }
    }
}

#[test]
fn cpu_rope_table_of_position_angles_equals_rope_at_exactly() {
    // The table Hugging Face would build: cos/sin of the f32 product position * inv_freq, with
    // inv_freq = theta^(-2j/D) rounded to f32.
    let theta = 10000.0f64;
    let cases: [(&[usize], &[u32]); 2] = [
        (&[2, 5, 3, 8], &[0, 1, 2, 3, 4]),
        (&[4, 2, 64], &[4093, 7, 0, 128]),
    ];
    for (shape, ids) in cases {
        let [seq_len, _, dim] = shape[shape.len() - 3..].try_into().unwrap();
        let inv_freq: Vec<f32> = (0..dim / 2)
            .map(|j| theta.powf(-2.0 * j as f64 / dim as f64) as f32)
            .collect();
        let (cos, sin): (Vec<f32>, Vec<f32>) = ids
            .iter()
            .flat_map(|&p| inv_freq.iter().map(move |&f| (p as f32 * f).sin_cos()))
            .map(|(s, c)| (c, s))
            .unzip();
        let [cos_t, sin_t] = table_tensors(&Device::Cpu, seq_len, dim / 2, &cos, &sin);
        let positions = Tensor::from_u32(&Device::Cpu, &[seq_len], ids).unwrap();
        let values = Rng::new(7).normals(shape.iter().product());
        for dtype in [DType::F32, DType::F16] {
            let x = Tensor::from_f32(&Device::Cpu, shape, dtype, &values).unwrap();
            for style in STYLES {
                let want = rope_at(&x, &positions, theta as f32, style).unwrap();
                let got = rope_table(&x, &cos_t, &sin_t, style).unwrap();
                assert_eq!(got.dtype(), dtype);
                assert!(
                    got.to_bytes().unwrap() == want.to_bytes().unwrap(),
                    "rope_table vs rope_at {style:?} {dtype} {shape:?}"
                );
            }
        }
    }
}

#[test]
fn gpu_rope_table_matches_cpu() {
    // Both sides do the same f32 products of the same table values; they may differ by fused
    // multiply-adds and one rounding, a few ulps of |x|: f32 atol 1e-5, rtol 1e-5. f16 results may
    // then round to neighbouring values, one f16 ulp: atol 1e-3, rtol 2e-3.
    with_gpu(|gpu| {
        let cases: [&[usize]; 5] = [
            &[37, 3, 24],
            &[37, 3, 64],
            &[2, 37, 3, 24],
            &[1, 1, 2],
            &[3, 5, 2, 10],
        ];
        for dtype in [DType::F32, DType::F16] {
            let (atol, rtol) = match dtype {
                DType::F32 => (1e-5, 1e-5),
                _ => (1e-3, 2e-3),
            };
            for (i, &shape) in cases.iter().enumerate() {
                let [seq_len, _, dim] = shape[shape.len() - 3..].try_into().unwrap();
                let (cos, sin) = random_table(seq_len, dim / 2, 600 + i as u64);
                let cpu_table = table_tensors(&Device::Cpu, seq_len, dim / 2, &cos, &sin);
                let dev_table = table_tensors(gpu, seq_len, dim / 2, &cos, &sin);
                let (cpu, dev) = random_pair(gpu, shape, dtype, 700 + i as u64);
                for style in STYLES {
                    let want = rope_table(&cpu, &cpu_table[0], &cpu_table[1], style).unwrap();
                    let got = rope_table(&dev, &dev_table[0], &dev_table[1], style).unwrap();
                    assert_eq!(got.shape(), shape);
                    assert_eq!(got.dtype(), dtype);
                    assert_close(
                        &format!("rope_table {style:?} {dtype} {shape:?}"),
                        &got.to_vec_f32().unwrap(),
                        &want.to_vec_f32().unwrap(),
                        atol,
                        rtol,
                    );
                }
            }
        }
    });
}

#[test]
fn rope_table_bad_inputs_are_errors() {
    let style = RopeStyle::HalfSplit;
    let table = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_f32(&Device::Cpu, shape, DType::F32, &vec![0.5; n]).unwrap()
    };
    let err = |x: &Tensor, cos: &Tensor, sin: &Tensor| {
        rope_table(x, cos, sin, style).unwrap_err().to_string()
    };
    let x = cpu_tensor(&[3, 2, 4], &[0.0; 24]);
    let ok = table(&[3, 2]);
    assert!(rope_table(&x, &ok, &ok, style).is_ok());

    let flat = cpu_tensor(&[3, 8], &[0.0; 24]);
    let e = err(&flat, &ok, &ok);
    assert!(
        e.contains("rope_table") && e.contains("[L, H, D]") && e.contains("[3, 8]"),
        "{e}"
    );
    let five = cpu_tensor(&[1, 1, 3, 2, 4], &[0.0; 24]);
    let e = err(&five, &ok, &ok);
    assert!(
        e.contains("rope_table") && e.contains("[1, 1, 3, 2, 4]"),
        "{e}"
    );
    let odd = cpu_tensor(&[3, 1, 3], &[0.0; 9]);
    let e = err(&odd, &table(&[3, 1]), &table(&[3, 1]));
    assert!(
        e.contains("rope_table") && e.contains("even") && e.contains("[3, 1, 3]"),
        "{e}"
    );
    // A table over D rather than D/2 columns, and one over the wrong number of tokens.
    let e = err(&x, &table(&[3, 4]), &ok);
    assert!(
        e.contains("rope_table")
            && e.contains("`cos` [3, 4]")
            && e.contains("[3, 2]")
            && e.contains("[3, 2, 4]"),
        "{e}"
    );
    let e = err(&x, &ok, &table(&[2, 2]));
    assert!(
        e.contains("rope_table") && e.contains("`sin` [2, 2]") && e.contains("[3, 2]"),
        "{e}"
    );
    let e = err(&x, &ok, &table(&[6]));
    assert!(e.contains("`sin` [6]"), "{e}");
    let half = Tensor::from_f32(&Device::Cpu, &[3, 2], DType::F16, &[0.5; 6]).unwrap();
    let e = err(&x, &half, &ok);
    assert!(
        e.contains("rope_table") && e.contains("f16") && e.contains("`cos`"),
        "{e}"
    );
    let ids = Tensor::from_u32(&Device::Cpu, &[3, 2, 4], &[0; 24]).unwrap();
    let e = err(&ids, &ok, &ok);
    assert!(
        e.contains("rope_table") && e.contains("u32") && e.contains("`x`"),
        "{e}"
    );
    let empty = cpu_tensor(&[0, 2, 4], &[]);
    let e = err(&empty, &table(&[0, 2]), &table(&[0, 2]));
    assert!(e.contains("rope_table") && e.contains("zero-size"), "{e}");
    with_gpu(|gpu| {
        let e = err(&x.to_device(gpu).unwrap(), &ok, &ok);
        assert!(
            e.contains("rope_table") && e.contains("`cos`") && e.contains("device"),
            "{e}"
        );
    });
}
