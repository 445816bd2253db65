//! GPU argmax against the CPU reference (ids must be equal, not close), and the CPU reference
//! against closed forms: ties, NaN at and after index 0, infinities, -0 vs +0, shapes.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{with_gpu, Rng};

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

fn cpu(shape: &[usize], values: &[f32]) -> Tensor {
    Tensor::from_f32(&Device::Cpu, shape, DType::F32, values).unwrap()
}

fn ids(t: Result<Tensor>) -> Vec<u32> {
    t.unwrap().to_vec_u32().unwrap()
}

/// Rows whose answers are known: (values, argmax, argmax_finite).
fn known_rows() -> Vec<(Vec<f32>, u32, u32)> {
    let nf = NON_FINITE;
    vec![
        (vec![1.0, 3.0, 3.0, 2.0], 1, 1),
        (vec![-7.5], 0, 0),
        (vec![4.0, 4.0, 4.0], 0, 0),
        (vec![-0.0, 0.0], 0, 0),
        (vec![0.0, -0.0, 1e-3], 2, 2),
        (vec![-3.0, -1.0, -2.0], 1, 1),
        // NaN at index 0 is never replaced; elsewhere it never wins.
        (vec![NAN, 5.0, 7.0], 0, nf),
        (vec![1.0, NAN, 7.0, NAN], 2, nf),
        (vec![3.0, NAN, 3.0], 0, nf),
        (vec![NAN, NAN], 0, nf),
        (vec![-INF, NAN, -5.0], 2, nf),
        (vec![1.0, INF, INF], 1, nf),
        (vec![-INF, -INF], 0, nf),
        (vec![-INF, 2.0], 1, nf),
    ]
}

#[test]
fn cpu_argmax_matches_closed_forms() {
    for (row, want, want_finite) in known_rows() {
        let x = cpu(&[1, row.len()], &row);
        assert_eq!(ids(argmax(&x)), [want], "argmax {row:?}");
        assert_eq!(ids(argmax_finite(&x)), [want_finite], "finite {row:?}");
    }
    // The last dimension is reduced: [2, 3, 4] -> [2, 3]; a vector gives a scalar.
    let x = cpu(&[2, 3, 4], &Rng::new(3).normals(24));
    let got = argmax(&x).unwrap();
    assert_eq!((got.shape(), got.dtype()), (&[2usize, 3][..], DType::U32));
    let v = x.to_vec_f32().unwrap();
    let want: Vec<u32> = v.chunks(4).map(cpu::argmax_row).collect();
    assert_eq!(got.to_vec_u32().unwrap(), want);
    let got = argmax(&cpu(&[5], &[0.0, 9.0, 1.0, 9.0, 2.0])).unwrap();
    assert_eq!(got.shape(), &[] as &[usize]);
    assert_eq!(got.to_vec_u32().unwrap(), [1]);
}

/// Normal rows, rows of small integers (many ties), a constant row, and a row whose maximum is
/// repeated at its end.
fn random_rows(rows: usize, width: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut v = rng.normals(rows * width);
    for (r, row) in v.chunks_mut(width).enumerate() {
        match r % 4 {
            1 => row.iter_mut().for_each(|x| *x = (*x * 2.0).round()),
            2 => row.fill(0.5),
            3 => {
                let last = width - 1;
                row[last] = 9.0;
                row[last / 2] = 9.0;
            }
            _ => {}
        }
    }
    v
}

#[test]
fn gpu_argmax_matches_cpu() {
    with_gpu(|gpu| {
        for dtype in [DType::F32, DType::F16] {
            // Around one workgroup (256) and not multiples of it; 1 and 2 leave most idle.
            for width in [1usize, 2, 255, 256, 257, 1000, 4099] {
                let rows = 6;
                let values = random_rows(rows, width, width as u64);
                let c = Tensor::from_f32(&Device::Cpu, &[rows, width], dtype, &values).unwrap();
                let g = c.to_device(gpu).unwrap();
                for (name, f) in [
                    ("argmax", argmax as fn(&Tensor) -> Result<Tensor>),
                    ("argmax_finite", argmax_finite),
                ] {
                    let want = ids(f(&c));
                    let got = f(&g).unwrap();
                    assert_eq!(got.shape(), [rows]);
                    assert_eq!(
                        got.to_vec_u32().unwrap(),
                        want,
                        "{name} {dtype} width {width}"
                    );
                }
            }
            // The known rows, each padded to 300 with -1e4 (so the special values are spread over
            // invocations, not just the first few): the answers do not move.
            for (row, want, want_finite) in known_rows() {
                for shift in [0usize, 1, 255, 290] {
                    // A NaN that leaves index 0 follows other rules; a row with nothing above
                    // the padding (and no NaN first) would have its answer in the padding.
                    let nan_first = row[0].is_nan();
                    let above = row.iter().any(|&x| x > -1e4);
                    if (shift > 0 && nan_first) || (!nan_first && !above) {
                        continue;
                    }
                    let mut v = vec![-1e4f32; 300];
                    v[shift..shift + row.len()].copy_from_slice(&row);
                    let at = |id: u32| {
                        if id == NON_FINITE {
                            id
                        } else {
                            id + shift as u32
                        }
                    };
                    let c = Tensor::from_f32(&Device::Cpu, &[1, 300], dtype, &v).unwrap();
                    let g = c.to_device(gpu).unwrap();
                    let what = format!("{dtype} {row:?} at {shift}");
                    let (want, want_finite) = (at(want), at(want_finite));
                    assert_eq!(ids(argmax(&c)), [want], "cpu {what}");
                    assert_eq!(ids(argmax(&g)), [want], "gpu {what}");
                    assert_eq!(ids(argmax_finite(&g)), [want_finite], "gpu finite {what}");
                }
            }
        }
        // A vocabulary-sized row (Mistral's 131072) whose maximum repeats, and rank 3 with rows past
        // one workgroup's worth.
        let mut v = Rng::new(8).normals(131072);
        v[70001] = 12.0;
        v[131071] = 12.0;
        let g = Tensor::from_f32(gpu, &[1, 131072], DType::F16, &v).unwrap();
        assert_eq!(ids(argmax(&g)), [70001]);
        let c = cpu(&[3, 100, 33], &random_rows(300, 33, 5));
        let want = ids(argmax(&c));
        let got = argmax(&c.to_device(gpu).unwrap()).unwrap();
        assert_eq!(got.shape(), [3, 100]);
        assert_eq!(got.to_vec_u32().unwrap(), want);
    });
}

#[test]
fn bad_inputs_are_errors() {
    let empty = cpu(&[2, 0], &[]);
    let err = argmax(&empty).unwrap_err().to_string();
    assert!(err.contains("argmax") && err.contains("[2, 0]"), "{err}");
    let scalar = cpu(&[], &[1.0]);
    let err = argmax_finite(&scalar).unwrap_err().to_string();
    assert!(
        err.contains("argmax_finite") && err.contains("scalar"),
        "{err}"
    );
    let ids = Tensor::from_u32(&Device::Cpu, &[2], &[1, 2]).unwrap();
    let err = argmax(&ids).unwrap_err().to_string();
    assert!(err.contains("argmax") && err.contains("u32"), "{err}");
}
