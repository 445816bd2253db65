//! The ggml block types kiln reads from GGUF files (q4_1, q5_0, q5_1, q2_K .. q6_K) against
//! llama.cpp itself: tests/fixtures/ggml-quants/ holds matrices of odd row counts quantised by
//! `llama-quantize --pure`, with gguf-py's dequantised floats as goldens
//! (tools/make_ggml_quant_fixtures.py; gguf-py's floats equal ggml's C `dequantize_row_*` bit for bit).
//!
//! Tolerances:
//! - Dequantisation: bit-identical to the goldens.
//! - CPU `qlinear` vs the f32 matmul of the golden weight, and GPU vs CPU in f32: two f32 sums of the
//!   same K products in different orders (the GPU may also fuse multiply-adds) differ by at most
//!   about 2 K eps sum |x w|; the check allows 2 K eps sum |x w| + 1e-30 per output.
//! - GPU vs CPU with f16 activations and outputs: the f32 bound above plus one f16 rounding of the
//!   output (2^-10 |want|) plus f16's smallest subnormal.

use std::path::PathBuf;

use half::f16;
use kiln_runtime::gguf::{GgufFile, GgufType};
use kiln_runtime::{DType, Device, QTensor, QuantFormat, Tensor};

use super::*;
use crate::matmul::linear;
use crate::testing::{with_gpu, Rng};

/// The formats the fixtures hold, by fixture name.
const FORMATS: [(QuantFormat, &str); 8] = [
    (QuantFormat::Q4K, "q4_k"),
    (QuantFormat::Q6K, "q6_k"),
    (QuantFormat::Q5K, "q5_k"),
    (QuantFormat::Q3K, "q3_k"),
    (QuantFormat::Q2K, "q2_k"),
    (QuantFormat::Q4_1, "q4_1"),
    (QuantFormat::Q5_0, "q5_0"),
    (QuantFormat::Q5_1, "q5_1"),
];

fn fixture(name: &str) -> GgufFile {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ggml-quants");
    GgufFile::open(dir.join(format!("{name}.gguf"))).unwrap()
}

/// One fixture matrix: its packed bytes, `[N, K]` and the golden floats.
struct Matrix {
    name: String,
    shape: [usize; 2],
    packed: Vec<u8>,
    golden: Vec<f32>,
}

fn matrices(format: QuantFormat, name: &str) -> Vec<Matrix> {
    let (q, g) = (fixture(name), fixture(&format!("{name}.golden")));
    let names = q.names();
    assert_eq!(names, ["a.weight", "b.weight", "c.weight"], "{name}");
    names
        .into_iter()
        .map(|t| {
            let info = q.tensor(t).unwrap();
            assert_eq!(info.kind, GgufType::Packed(format), "{name} {t}");
            let gi = g.tensor(t).unwrap();
            assert_eq!(
                (gi.kind, &gi.shape),
                (GgufType::F32, &info.shape),
                "{name} {t}"
            );
            let golden = g
                .bytes(t)
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Matrix {
                name: format!("{name} {t} {:?}", info.shape),
                shape: [info.shape[0], info.shape[1]],
                packed: q.bytes(t).unwrap().to_vec(),
                golden,
            }
        })
        .collect()
}

#[test]
fn fixtures_dequantise_bit_identical_to_ggml() {
    for (format, name) in FORMATS {
        for m in matrices(format, name) {
            assert!(m.shape[0] % 2 == 1, "{}: odd row counts", m.name);
            let got = dequantize(format, &m.packed).unwrap();
            assert_eq!(got.len(), m.golden.len(), "{}", m.name);
            let bad: Vec<usize> = (0..got.len())
                .filter(|&i| got[i].to_bits() != m.golden[i].to_bits())
                .collect();
            assert!(
                bad.is_empty(),
                "{}: {} values differ from ggml, first at {}: {} vs {}",
                m.name,
                bad.len(),
                bad[0],
                got[bad[0]],
                m.golden[bad[0]]
            );
            // The fixtures cover zero rows and f16 scales below the normal range.
            assert!(
                m.golden.iter().any(|&v| v != 0.0 && v.abs() < 1e-4),
                "{}",
                m.name
            );
        }
    }
}

/// `x [M, K]` (standard normal) and a bias for a weight of `n` rows.
fn inputs(m: usize, k: usize, n: usize, dtype: DType, seed: u64) -> (Tensor, Tensor) {
    let mut rng = Rng::new(seed);
    let x = Tensor::from_f32(&Device::Cpu, &[m, k], dtype, &rng.normals(m * k)).unwrap();
    let b = Tensor::from_f32(&Device::Cpu, &[n], dtype, &rng.normals(n)).unwrap();
    (x, b)
}

/// Per output: `sum_k |x w|`, the scale of its summation error.
fn abs_sums(x: &Tensor, w: &[f32], n: usize) -> Vec<f32> {
    let x = x.to_vec_f32().unwrap();
    let k = w.len() / n;
    x.chunks_exact(k)
        .flat_map(|x| {
            w.chunks_exact(k)
                .map(|w| x.iter().zip(w).map(|(a, b)| (a * b).abs()).sum::<f32>())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// |got - want| <= 2 K eps sum|x w| (+ an f16 rounding of the output when `f16`).
fn assert_summation_close(
    what: &str,
    got: &[f32],
    want: &[f32],
    sums: &[f32],
    k: usize,
    f16: bool,
) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(sums).enumerate() {
        let mut bound = 2.0 * k as f32 * f32::EPSILON * s + 1e-30;
        if f16 {
            bound += w.abs() / 1024.0 + 6e-8;
        }
        assert!(
            (g - w).abs() <= bound,
            "{what}: output {i}: {g} vs {w} (|diff| {} > {bound})",
            (g - w).abs()
        );
    }
}

#[test]
fn cpu_exact_qlinear_matches_the_golden_weights_matmul() {
    for (format, name) in FORMATS {
        for (i, mat) in matrices(format, name).into_iter().enumerate() {
            let [n, k] = mat.shape;
            let q = QTensor::from_packed(&Device::Cpu, format, &mat.shape, &mat.packed).unwrap();
            let wd = Tensor::from_f32(&Device::Cpu, &[n, k], DType::F32, &mat.golden).unwrap();
            // M = 1 dots each block as it is read; M = 3 unpacks rows and runs the f32 GEMM.
            for m in [1, 3] {
                let (x, b) = inputs(m, k, n, DType::F32, 10 * i as u64 + m as u64);
                let bias = (m == 3).then_some(&b);
                let got = cpu::qlinear_exact(&x, &q, bias, m, &[m, n]).unwrap();
                assert_eq!(got.shape(), &[m, n]);
                let want = linear(&x, &wd, bias).unwrap();
                assert_summation_close(
                    &format!("{} m {m}", mat.name),
                    &got.to_vec_f32().unwrap(),
                    &want.to_vec_f32().unwrap(),
                    &abs_sums(&x, &mat.golden, n),
                    k,
                    false,
                );
            }
        }
    }
}

/// The CPU's f32-activation `qlinear` (the reference the GPU kernels are held to; `qlinear` itself
/// rounds activations to 8 bits for q4_K / q6_K, see `int8_kquants_tests.rs`).
fn exact(x: &Tensor, q: &QTensor, bias: Option<&Tensor>) -> Tensor {
    let (m, n) = (x.numel() / q.shape()[1], q.shape()[0]);
    cpu::qlinear_exact(x, q, bias, m, &[m, n]).unwrap()
}

/// GPU `qlinear` against the CPU's for one packed weight, f32 and f16 activations.
fn check_gpu(gpu: &Device, what: &str, q: &QTensor, m: usize, bias: bool, seed: u64) {
    let [n, k] = [q.shape()[0], q.shape()[1]];
    let w = dequantize(q.format(), &q.to_packed_bytes().unwrap()).unwrap();
    let gq = q.to_device(gpu).unwrap();
    for dtype in [DType::F32, DType::F16] {
        if !gpu.supports(dtype) {
            continue;
        }
        let (x, b) = inputs(m, k, n, dtype, seed);
        let bias_cpu = bias.then_some(&b);
        let want = exact(&x, q, bias_cpu);
        let (gx, gb) = (x.to_device(gpu).unwrap(), b.to_device(gpu).unwrap());
        let got = qlinear(&gx, &gq, bias.then_some(&gb)).unwrap();
        assert_eq!((got.shape(), got.dtype()), (want.shape(), dtype), "{what}");
        assert_summation_close(
            &format!("{what} m {m} {dtype} bias {bias}"),
            &got.to_vec_f32().unwrap(),
            &want.to_vec_f32().unwrap(),
            &abs_sums(&x, &w, n),
            k,
            dtype == DType::F16,
        );
    }
}

#[test]
fn gpu_qlinear_matches_cpu_on_fixtures() {
    with_gpu(|gpu| {
        for (format, name) in FORMATS {
            for (i, mat) in matrices(format, name).into_iter().enumerate() {
                let q =
                    QTensor::from_packed(&Device::Cpu, format, &mat.shape, &mat.packed).unwrap();
                // GEMV (M <= 8) and GEMM (ragged 64x64 tiles: N is 7, 13 or 33, M = 70).
                for (m, bias) in [(1, true), (5, false), (9, true), (70, false)] {
                    check_gpu(gpu, &mat.name, &q, m, bias, 100 + i as u64);
                }
            }
        }
    });
}

/// Random blocks of `format` with every f16 field set to a finite scale in [1e-3, 2e-2): any bit
/// pattern of the codes and sub-block scales is a valid block.
pub(super) fn random_blocks(format: QuantFormat, n: usize, k: usize, seed: u64) -> QTensor {
    let mut rng = Rng::new(seed);
    let bytes = format.packed_bytes("random", &[n, k]).unwrap();
    let mut b: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
    let halves: &[usize] = match format {
        QuantFormat::Q4_1 | QuantFormat::Q5_1 | QuantFormat::Q4K | QuantFormat::Q5K => &[0, 2],
        QuantFormat::Q5_0 => &[0],
        QuantFormat::Q2K => &[80, 82],
        QuantFormat::Q3K => &[108],
        QuantFormat::Q6K => &[208],
        _ => unreachable!("{format}"),
    };
    for block in b.chunks_exact_mut(format.block_bytes()) {
        for &at in halves {
            let v = 1e-3 + 1.9e-2 * rng.uniform();
            block[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        }
    }
    QTensor::from_packed(&Device::Cpu, format, &[n, k], &b).unwrap()
}

#[test]
fn gpu_qgemv_spreads_long_rows_over_the_column_threads() {
    with_gpu(|gpu| {
        // 2304 = 9 K-quant blocks, 72 chunks of 32: more than the 32 threads per column, and not a
        // multiple of them.
        for (i, (format, _)) in FORMATS.into_iter().enumerate() {
            let k = 2304;
            let q = random_blocks(format, 11, k, i as u64);
            check_gpu(gpu, &format!("{format} random [11, {k}]"), &q, 1, true, 7);
            check_gpu(gpu, &format!("{format} random [11, {k}]"), &q, 3, false, 8);
        }
    });
}

#[test]
fn gpu_reads_blocks_at_every_alignment() {
    // Q5_0 (22 bytes), Q3_K (110) and Q6_K (210) blocks alternate between 4- and 2-byte alignment;
    // one row of an odd number of blocks, then two rows, put fields on either side of a word edge.
    with_gpu(|gpu| {
        for format in [QuantFormat::Q5_0, QuantFormat::Q3K, QuantFormat::Q6K] {
            let k = 3 * format.block_len();
            for n in [1, 2, 3] {
                let q = random_blocks(format, n, k, n as u64);
                check_gpu(gpu, &format!("{format} random [{n}, {k}]"), &q, 2, false, 9);
            }
        }
    });
}

#[test]
fn read_only_formats_refuse_to_pack_and_bad_lengths_are_errors() {
    let err = quantize(QuantFormat::Q4K, &[1, 256], &[0.0; 256])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("q4_k") && err.contains("does not pack"),
        "{err}"
    );
    for (format, _) in FORMATS {
        let bytes = vec![0u8; 3 * format.block_bytes() - 1];
        let err = dequantize(format, &bytes).unwrap_err().to_string();
        assert!(
            err.contains("whole number") && err.contains(format.name()),
            "{err}"
        );
        let k = 256;
        let err = QTensor::from_packed(&Device::Cpu, format, &[3, k], &bytes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{} bytes given", bytes.len())),
            "{err}"
        );
    }
    // K = 288 is whole 32-weight blocks but not whole 256-weight K-quant blocks.
    let err = QuantFormat::Q6K
        .packed_bytes("blk.0.ffn_down.weight", &[2, 288])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blk.0.ffn_down.weight") && err.contains("256"),
        "{err}"
    );
}

#[test]
fn packed_convolution_reads_ggml_formats_on_cpu_and_gpu() {
    use crate::conv::{conv2d_padded, qconv2d_padded, Padding2d};
    // 3x3 over 256 channels: K = 2304, nine 256-weight blocks (72 32-weight blocks) per row; Cout 5
    // and 6x5 pixels leave both tiles ragged.
    let (cin, cout) = (256, 5);
    let mut rng = Rng::new(31);
    let x = Tensor::from_f32(
        &Device::Cpu,
        &[1, cin, 6, 5],
        DType::F32,
        &rng.normals(cin * 30),
    )
    .unwrap();
    let pad = Padding2d::symmetric(1, 1);
    for (i, (format, _)) in FORMATS.into_iter().enumerate() {
        let q = random_blocks(format, cout, cin * 9, 40 + i as u64);
        let w = dequantize(format, &q.to_packed_bytes().unwrap()).unwrap();
        let wf = Tensor::from_f32(&Device::Cpu, &[cout, cin, 3, 3], DType::F32, &w).unwrap();
        let want = conv2d_padded(&x, &wf, None, [1, 1], pad)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let got = qconv2d_padded(&x, &q, [3, 3], None, [1, 1], pad).unwrap();
        // Each output's sum |x w| is the convolution of |x| with |w|.
        let abs = |t: &Tensor| {
            let v: Vec<f32> = t.to_vec_f32().unwrap().iter().map(|v| v.abs()).collect();
            Tensor::from_f32(&Device::Cpu, t.shape(), DType::F32, &v).unwrap()
        };
        let sums = conv2d_padded(&abs(&x), &abs(&wf), None, [1, 1], pad)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let k = cin * 9;
        assert_summation_close(
            &format!("{format} cpu conv"),
            &got.to_vec_f32().unwrap(),
            &want,
            &sums,
            k,
            false,
        );
        with_gpu(|gpu| {
            let got = qconv2d_padded(
                &x.to_device(gpu).unwrap(),
                &q.to_device(gpu).unwrap(),
                [3, 3],
                None,
                [1, 1],
                pad,
            )
            .unwrap();
            assert_summation_close(
                &format!("{format} gpu conv"),
                &got.to_vec_f32().unwrap(),
                &want,
                &sums,
                k,
                false,
            );
        });
    }
}

#[test]
fn dequantize_rows_unpacks_just_the_rows_asked_for() {
    for (format, _) in FORMATS {
        let (n, k) = (9, 512);
        let q = random_blocks(format, n, k, 31);
        let all = dequantize(format, &q.to_packed_bytes().unwrap()).unwrap();
        let ids = [8u32, 0, 3, 3];
        let rows = dequantize_rows(&q, &ids).unwrap();
        assert_eq!(rows.shape(), [4, k]);
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&i| all[i as usize * k..][..k].to_vec())
            .collect();
        assert_eq!(rows.to_vec_f32().unwrap(), want, "{format}");
        let err = dequantize_rows(&q, &[9]).unwrap_err().to_string();
        assert!(err.contains("row 9") && err.contains("[9, 512]"), "{err}");
    }
}
