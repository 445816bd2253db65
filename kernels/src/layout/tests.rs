//! Layout ops: the CPU implementation against index arithmetic done by hand, and the GPU against the
//! CPU. Both only copy, so every comparison is exact (bit-for-bit), for f32, f16 and u32 alike.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{random_pair, with_gpu};

fn arange(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|v| v as f32).collect();
    Tensor::from_f32(&Device::Cpu, shape, DType::F32, &values).unwrap()
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
fn cpu_permute_of_arange_matches_index_arithmetic() {
    let x = arange(&[2, 3, 4]);
    let perms = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for perm in perms {
        let y = permute(&x, &perm).unwrap();
        let shape: Vec<usize> = perm.iter().map(|&d| [2, 3, 4][d]).collect();
        assert_eq!(y.shape(), shape);
        let got = y.to_vec_f32().unwrap();
        for a in 0..shape[0] {
            for b in 0..shape[1] {
                for c in 0..shape[2] {
                    // Input coordinate of output (a, b, c): input dim perm[k] takes output coord k.
                    let mut idx = [0; 3];
                    idx[perm[0]] = a;
                    idx[perm[1]] = b;
                    idx[perm[2]] = c;
                    let want = (idx[0] * 12 + idx[1] * 4 + idx[2]) as f32;
                    let at = (a * shape[1] + b) * shape[2] + c;
                    assert_eq!(got[at], want, "perm {perm:?} at ({a}, {b}, {c})");
                }
            }
        }
    }
    let t = transpose(&arange(&[2, 3]), 0, 1).unwrap();
    assert_eq!(t.shape(), [3, 2]);
    assert_eq!(t.to_vec_f32().unwrap(), [0., 3., 1., 4., 2., 5.]);
}

#[test]
fn plan_drops_unit_dims_and_merges_neighbours() {
    assert_eq!(
        plan(&[2, 3, 4], &[0, 2, 1]),
        (vec![2, 4, 3], vec![12, 1, 4])
    );
    // [B, L, H, D] -> [B, H, L, D]: D stays innermost.
    assert_eq!(
        plan(&[2, 5, 3, 8], &[0, 2, 1, 3]),
        (vec![2, 3, 5, 8], vec![120, 8, 24, 1])
    );
    // Moving size-1 dims moves nothing.
    assert_eq!(plan(&[2, 1, 3, 1], &[1, 0, 3, 2]), (vec![6], vec![1]));
    assert_eq!(plan(&[4, 5, 6], &[1, 2, 0]), (vec![30, 4], vec![1, 30]));
}

#[test]
fn cpu_concat_along_first_middle_and_last_dims() {
    let a = arange(&[2, 2, 2]);
    let b = Tensor::from_f32(&Device::Cpu, &[2, 1, 2], DType::F32, &[10., 11., 12., 13.]).unwrap();
    let c = concat(&[&a, &b], 1).unwrap();
    assert_eq!(c.shape(), [2, 3, 2]);
    assert_eq!(
        c.to_vec_f32().unwrap(),
        [0., 1., 2., 3., 10., 11., 4., 5., 6., 7., 12., 13.]
    );
    let c = concat(&[&b, &b], 0).unwrap();
    assert_eq!(c.shape(), [4, 1, 2]);
    assert_eq!(
        c.to_vec_f32().unwrap(),
        [10., 11., 12., 13., 10., 11., 12., 13.]
    );
    let d = arange(&[2, 2, 1]);
    let c = concat(&[&a, &d, &a], 2).unwrap();
    assert_eq!(c.shape(), [2, 2, 5]);
    let want = [
        0., 1., 0., 0., 1., 2., 3., 1., 2., 3., 4., 5., 2., 4., 5., 6., 7., 3., 6., 7.,
    ];
    assert_eq!(c.to_vec_f32().unwrap(), want);
    // A zero-size part is skipped; u32 data is copied as is.
    let empty = Tensor::from_f32(&Device::Cpu, &[2, 0, 2], DType::F32, &[]).unwrap();
    same_bits("concat empty", &concat(&[&empty, &b], 1).unwrap(), &b);
    let ids = Tensor::from_u32(&Device::Cpu, &[2], &[7, 8]).unwrap();
    let more = Tensor::from_u32(&Device::Cpu, &[1], &[9]).unwrap();
    assert_eq!(
        concat(&[&ids, &more], 0).unwrap().to_vec_u32().unwrap(),
        [7, 8, 9]
    );
}

#[test]
fn gpu_permute_matches_cpu() {
    with_gpu(|gpu| {
        // Odd sizes (scalar path), an innermost run of 8 (vec4 path), size-1 dims, rank 8, a large dim.
        let cases: [(&[usize], &[usize]); 7] = [
            (&[3, 5, 7], &[2, 0, 1]),
            (&[3, 5, 7], &[0, 2, 1]),
            (&[2, 5, 3, 8], &[0, 2, 1, 3]),
            (&[1, 7, 1, 3], &[3, 1, 0, 2]),
            (&[2, 1, 2, 3, 1, 2, 3, 2], &[7, 6, 5, 4, 3, 2, 1, 0]),
            (&[2, 3001, 3], &[0, 2, 1]),
            (&[4, 4], &[1, 0]),
        ];
        for dtype in [DType::F32, DType::F16] {
            for (i, (shape, perm)) in cases.iter().enumerate() {
                let (cpu, dev) = random_pair(gpu, shape, dtype, 30 + i as u64);
                let want = permute(&cpu, perm).unwrap();
                let got = permute(&dev, perm).unwrap();
                same_bits(&format!("permute {dtype} {shape:?} {perm:?}"), &got, &want);
            }
        }
        let values: Vec<u32> = (0..60).collect();
        let ids = Tensor::from_u32(&Device::Cpu, &[3, 4, 5], &values).unwrap();
        let want = transpose(&ids, 0, 2).unwrap();
        let got = transpose(&ids.to_device(gpu).unwrap(), 0, 2).unwrap();
        same_bits("transpose u32", &got, &want);
    });
}

/// Pixtral's 2x2 patch merger regroups `[h, w, d]` as `[h/2, 2, w/2, 2, d]`, permuted by
/// `[0, 2, 4, 1, 3]` into `[(h/2)(w/2), 4d]`: output cell (i, j) must hold input cell
/// (2i + kh, 2j + kw) channel c at feature c*4 + kh*2 + kw, torch's `unfold(kernel = stride = 2)` order.
#[test]
fn rank_5_permute_gives_the_unfold_order_of_a_2x2_patch_merger() {
    let check = |device: &Device| {
        for (h, w, d) in [(6, 4, 5), (4, 6, 8), (2, 2, 3), (10, 14, 16)] {
            for dtype in [DType::F32, DType::F16] {
                let values = crate::testing::Rng::new((h * w * d) as u64).normals(h * w * d);
                let x = Tensor::from_f32(&Device::Cpu, &[h, w, d], dtype, &values).unwrap();
                let stored = x.to_vec_f32().unwrap();
                let mut want = vec![0.0f32; h * w * d];
                for i in 0..h / 2 {
                    for j in 0..w / 2 {
                        for c in 0..d {
                            for kh in 0..2 {
                                for kw in 0..2 {
                                    let cell = i * (w / 2) + j;
                                    let input = ((2 * i + kh) * w + 2 * j + kw) * d + c;
                                    want[cell * 4 * d + c * 4 + kh * 2 + kw] = stored[input];
                                }
                            }
                        }
                    }
                }
                let grouped = x
                    .to_device(device)
                    .unwrap()
                    .reshape(&[h / 2, 2, w / 2, 2, d])
                    .unwrap();
                let merged = permute(&grouped, &[0, 2, 4, 1, 3]).unwrap();
                assert_eq!(merged.shape(), [h / 2, w / 2, d, 2, 2]);
                let merged = merged.reshape(&[(h / 2) * (w / 2), 4 * d]).unwrap();
                assert_eq!(merged.dtype(), dtype);
                assert_eq!(
                    merged.to_vec_f32().unwrap(),
                    want,
                    "{} {dtype} [{h}, {w}, {d}]",
                    device.name()
                );
            }
        }
    };
    check(&Device::Cpu);
    with_gpu(check);
}

#[test]
fn gpu_concat_matches_cpu() {
    with_gpu(|gpu| {
        // (shapes, dim): odd rows (scalar path), rows of multiples of 4 (vec4 path), a mix of both,
        // size-1 dims, a zero-size part and a large row.
        let cases: [(&[&[usize]], usize); 6] = [
            (&[&[3, 5], &[2, 5], &[1, 5]], 0),
            (&[&[2, 3, 4], &[2, 1, 4], &[2, 5, 4]], 1),
            (&[&[3, 2, 7], &[3, 2, 1]], 2),
            (&[&[1, 8], &[1, 3], &[1, 4]], 1),
            (&[&[2, 0, 3], &[2, 2, 3]], 1),
            (&[&[2, 4000], &[2, 1001]], 1),
        ];
        for dtype in [DType::F32, DType::F16] {
            for (i, (shapes, dim)) in cases.iter().enumerate() {
                let pairs: Vec<(Tensor, Tensor)> = shapes
                    .iter()
                    .enumerate()
                    .map(|(j, s)| random_pair(gpu, s, dtype, 50 + 10 * i as u64 + j as u64))
                    .collect();
                let cpu: Vec<&Tensor> = pairs.iter().map(|p| &p.0).collect();
                let dev: Vec<&Tensor> = pairs.iter().map(|p| &p.1).collect();
                let want = concat(&cpu, *dim).unwrap();
                let got = concat(&dev, *dim).unwrap();
                same_bits(&format!("concat {dtype} {shapes:?} dim {dim}"), &got, &want);
            }
        }
    });
}

#[test]
fn bad_inputs_are_errors() {
    let a = arange(&[2, 3]);
    let b = arange(&[3, 3]);
    let err = concat(&[&a, &b], 1).unwrap_err().to_string();
    assert!(
        err.contains("concat") && err.contains("[2, 3]") && err.contains("[3, 3]"),
        "{err}"
    );
    let err = concat(&[], 0).unwrap_err().to_string();
    assert!(err.contains("concat") && err.contains("empty"), "{err}");
    let err = concat(&[&a, &a], 2).unwrap_err().to_string();
    assert!(err.contains("concat") && err.contains("dim 2"), "{err}");
    let h = Tensor::from_f32(&Device::Cpu, &[2, 3], DType::F16, &[0.0; 6]).unwrap();
    let err = concat(&[&a, &h], 0).unwrap_err().to_string();
    assert!(err.contains("concat") && err.contains("f16"), "{err}");
    let empty = Tensor::from_f32(&Device::Cpu, &[0, 3], DType::F32, &[]).unwrap();
    let err = concat(&[&empty, &empty], 0).unwrap_err().to_string();
    assert!(err.contains("concat") && err.contains("zero-size"), "{err}");

    for dims in [&[0, 0][..], &[1][..], &[0, 2][..], &[1, 0, 2][..]] {
        let err = permute(&a, dims).unwrap_err().to_string();
        assert!(
            err.contains("permute") && err.contains("[2, 3]") && err.contains("permutation"),
            "{err}"
        );
    }
    let err = transpose(&a, 0, 2).unwrap_err().to_string();
    assert!(err.contains("transpose") && err.contains("[2, 3]"), "{err}");
    let err = permute(&empty, &[1, 0]).unwrap_err().to_string();
    assert!(
        err.contains("permute") && err.contains("zero-size"),
        "{err}"
    );
    let nine = arange(&[1; 9]);
    let err = permute(&nine, &[8, 7, 6, 5, 4, 3, 2, 1, 0])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("permute") && err.contains("rank at most 8"),
        "{err}"
    );
}

#[test]
fn cpu_narrow_of_arange_matches_index_arithmetic() {
    let x = arange(&[2, 5, 3]);
    for (dim, start, len) in [(0, 1, 1), (1, 1, 3), (1, 0, 5), (2, 2, 1), (2, 0, 2)] {
        let y = narrow(&x, dim, start, len).unwrap();
        let mut shape = vec![2, 5, 3];
        shape[dim] = len;
        assert_eq!(y.shape(), shape);
        let got = y.to_vec_f32().unwrap();
        let mut at = 0;
        for a in 0..shape[0] {
            for b in 0..shape[1] {
                for c in 0..shape[2] {
                    let mut idx = [a, b, c];
                    idx[dim] += start;
                    let want = (idx[0] * 15 + idx[1] * 3 + idx[2]) as f32;
                    assert_eq!(
                        got[at], want,
                        "narrow({dim}, {start}, {len}) at ({a}, {b}, {c})"
                    );
                    at += 1;
                }
            }
        }
    }
}

#[test]
fn narrow_out_of_range_or_empty_is_an_error() {
    let x = arange(&[2, 5, 3]);
    for (dim, start, len) in [(3, 0, 1), (1, 4, 2), (1, 2, 0)] {
        let err = narrow(&x, dim, start, len).unwrap_err().to_string();
        assert!(err.contains("narrow") && err.contains("[2, 5, 3]"), "{err}");
    }
}

#[test]
fn gpu_narrow_matches_cpu_bit_for_bit() {
    with_gpu(|gpu| {
        // Row lengths and offsets that are and are not multiples of 4 (the vec4 path and the scalar).
        let cases: [(&[usize], usize, usize, usize); 5] = [
            (&[3, 10, 8], 1, 2, 5),
            (&[3, 10, 7], 1, 3, 4),
            (&[2, 4096, 4], 1, 1024, 1024),
            (&[6, 9], 0, 2, 3),
            (&[4, 5, 6], 2, 1, 3),
        ];
        for (shape, dim, start, len) in cases {
            for dtype in [DType::F32, DType::F16, DType::U32] {
                if !gpu.supports(dtype) {
                    continue;
                }
                let (cpu_x, gpu_x) = if dtype == DType::U32 {
                    let n: usize = shape.iter().product();
                    let ids: Vec<u32> = (0..n as u32).map(|v| v.wrapping_mul(2654435761)).collect();
                    let cpu_x = Tensor::from_u32(&Device::Cpu, shape, &ids).unwrap();
                    let gpu_x = cpu_x.to_device(gpu).unwrap();
                    (cpu_x, gpu_x)
                } else {
                    random_pair(gpu, shape, dtype, 5)
                };
                let what = format!("{dtype} {shape:?} narrow({dim}, {start}, {len})");
                let want = narrow(&cpu_x, dim, start, len).unwrap();
                let got = narrow(&gpu_x, dim, start, len).unwrap();
                same_bits(&what, &got.to_device(&Device::Cpu).unwrap(), &want);
            }
        }
    });
}
