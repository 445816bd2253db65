//! Embedding lookup: the CPU against rows picked by hand, the GPU against the CPU (exact: rows are
//! copied, not computed), and the GPU's zero rows for out-of-range ids.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{random_pair, with_gpu, Rng};

fn arange_table(vocab: usize, dim: usize) -> Tensor {
    let values: Vec<f32> = (0..vocab * dim).map(|v| v as f32).collect();
    Tensor::from_f32(&Device::Cpu, &[vocab, dim], DType::F32, &values).unwrap()
}

#[test]
fn cpu_picks_the_named_rows() {
    let table = arange_table(5, 3);
    let ids = Tensor::from_u32(&Device::Cpu, &[2, 2], &[4, 0, 2, 2]).unwrap();
    let out = embedding(&ids, &table).unwrap();
    assert_eq!(out.shape(), [2, 2, 3]);
    assert_eq!(
        out.to_vec_f32().unwrap(),
        [12., 13., 14., 0., 1., 2., 6., 7., 8., 6., 7., 8.]
    );
    // A rank-0 id gives one row.
    let one = Tensor::from_u32(&Device::Cpu, &[], &[1]).unwrap();
    let row = embedding(&one, &table).unwrap();
    assert_eq!(row.shape(), [3]);
    assert_eq!(row.to_vec_f32().unwrap(), [3., 4., 5.]);
}

#[test]
fn cpu_rejects_out_of_range_ids() {
    let table = arange_table(5, 3);
    let ids = Tensor::from_u32(&Device::Cpu, &[3], &[1, 5, 0]).unwrap();
    let err = embedding(&ids, &table).unwrap_err().to_string();
    assert!(
        err.contains("embedding") && err.contains("id 5") && err.contains("V = 5"),
        "{err}"
    );
}

#[test]
fn gpu_matches_cpu() {
    with_gpu(|gpu| {
        // (vocab, dim, ids shape): odd width (scalar path), width 1, multiples of 4 (vec4 path), a
        // large width, and ids of rank 1 to 3 with size-1 dims.
        let cases: [(usize, usize, &[usize]); 5] = [
            (7, 5, &[3, 4]),
            (3, 1, &[5]),
            (9, 8, &[1, 6, 1]),
            (11, 3001, &[2, 3]),
            (13, 4096, &[3]),
        ];
        for dtype in [DType::F32, DType::F16] {
            for (i, &(vocab, dim, ids_shape)) in cases.iter().enumerate() {
                let (table, table_dev) = random_pair(gpu, &[vocab, dim], dtype, 70 + i as u64);
                let n: usize = ids_shape.iter().product();
                let mut rng = Rng::new(90 + i as u64);
                let values: Vec<u32> = (0..n).map(|_| rng.below(vocab as u32)).collect();
                let ids = Tensor::from_u32(&Device::Cpu, ids_shape, &values).unwrap();
                let want = embedding(&ids, &table).unwrap();
                let got = embedding(&ids.to_device(gpu).unwrap(), &table_dev).unwrap();
                assert_eq!(got.shape(), want.shape());
                assert_eq!(got.dtype(), dtype);
                assert!(
                    got.to_bytes().unwrap() == want.to_bytes().unwrap(),
                    "embedding {dtype} V={vocab} D={dim} ids {ids_shape:?}"
                );
            }
        }
    });
}

#[test]
fn gpu_out_of_range_ids_give_zero_rows() {
    with_gpu(|gpu| {
        for dim in [3, 4] {
            let table = arange_table(4, dim).to_device(gpu).unwrap();
            let ids = Tensor::from_u32(gpu, &[3], &[1, 4, u32::MAX]).unwrap();
            let got = embedding(&ids, &table).unwrap().to_vec_f32().unwrap();
            let mut want: Vec<f32> = (dim..2 * dim).map(|v| v as f32).collect();
            want.resize(3 * dim, 0.0);
            assert_eq!(got, want, "dim {dim}");
        }
    });
}

#[test]
fn bad_inputs_are_errors() {
    let table = arange_table(5, 3);
    let float_ids = Tensor::from_f32(&Device::Cpu, &[2], DType::F32, &[0.0, 1.0]).unwrap();
    let err = embedding(&float_ids, &table).unwrap_err().to_string();
    assert!(
        err.contains("embedding") && err.contains("f32") && err.contains("[2]"),
        "{err}"
    );
    let ids = Tensor::from_u32(&Device::Cpu, &[2], &[0, 1]).unwrap();
    let flat = Tensor::from_f32(&Device::Cpu, &[15], DType::F32, &[0.0; 15]).unwrap();
    let err = embedding(&ids, &flat).unwrap_err().to_string();
    assert!(
        err.contains("embedding") && err.contains("rank 2") && err.contains("[15]"),
        "{err}"
    );
    let int_table = Tensor::from_u32(&Device::Cpu, &[5, 3], &[0; 15]).unwrap();
    let err = embedding(&ids, &int_table).unwrap_err().to_string();
    assert!(err.contains("embedding") && err.contains("u32"), "{err}");
    let no_ids = Tensor::from_u32(&Device::Cpu, &[0], &[]).unwrap();
    let err = embedding(&no_ids, &table).unwrap_err().to_string();
    assert!(
        err.contains("embedding") && err.contains("zero-size"),
        "{err}"
    );
}
