//! GPU elementwise kernels against the CPU reference, and the CPU reference against closed forms.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{assert_close, assert_tensors_close, random_pair, tolerance, with_gpu};

const DTYPES: [DType; 2] = [DType::F32, DType::F16];

#[test]
fn cpu_activations_match_closed_forms() {
    let x = Tensor::from_f32(&Device::Cpu, &[4], DType::F32, &[-2.0, -0.5, 0.0, 1.5]).unwrap();
    let silu = silu(&x).unwrap().to_vec_f32().unwrap();
    let want: Vec<f32> = [-2.0f32, -0.5, 0.0, 1.5]
        .iter()
        .map(|v| v / (1.0 + (-v).exp()))
        .collect();
    assert_close("silu", &silu, &want, 1e-6, 1e-6);
    // GELU(1.5) = 1.5 * Phi(1.5) = 1.5 * 0.9331928 = 1.3997892
    let g = gelu(&x).unwrap().to_vec_f32().unwrap();
    assert_close("gelu(1.5)", &g[3..], &[1.399_789_2], 1e-6, 0.0);
    let l = leaky_relu(&x, 0.2).unwrap().to_vec_f32().unwrap();
    assert_eq!(l, [-0.4, -0.1, 0.0, 1.5]);
}

#[test]
fn broadcast_shapes_and_strides() {
    let (s, sa, sb) = broadcast("add", &[2, 1, 4], &[3, 1]).unwrap();
    assert_eq!(s, [2, 3, 4]);
    assert_eq!(sa, [4, 0, 1]);
    assert_eq!(sb, [0, 1, 0]);
    let err = broadcast("add", &[2, 3], &[4, 3]).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[4, 3]"), "{err}");
}

#[test]
fn cpu_binary_broadcasts_rows() {
    let a = Tensor::from_f32(&Device::Cpu, &[2, 3], DType::F32, &[1., 2., 3., 4., 5., 6.]).unwrap();
    let b = Tensor::from_f32(&Device::Cpu, &[3], DType::F32, &[10., 20., 30.]).unwrap();
    assert_eq!(
        add(&a, &b).unwrap().to_vec_f32().unwrap(),
        [11., 22., 33., 14., 25., 36.]
    );
    let c = Tensor::from_f32(&Device::Cpu, &[2, 1], DType::F32, &[2., 4.]).unwrap();
    assert_eq!(
        div(&a, &c).unwrap().to_vec_f32().unwrap(),
        [0.5, 1., 1.5, 1., 1.25, 1.5]
    );
}

#[test]
fn gpu_unary_matches_cpu() {
    with_gpu(|gpu| {
        let ops = [
            Unary::Scale {
                mul: -1.5,
                add: 0.25,
            },
            Unary::Silu,
            Unary::GeluErf,
            Unary::GeluTanh,
            Unary::QuickGelu,
            Unary::LeakyRelu { slope: 0.2 },
        ];
        for dtype in DTYPES {
            // 1, a non-multiple of the workgroup, and more than one workgroup.
            for (i, n) in [1usize, 257, 3001].into_iter().enumerate() {
                let (cpu, dev) = random_pair(gpu, &[n], dtype, 10 + i as u64);
                for op in ops {
                    let want = unary(&cpu, op).unwrap();
                    let got = unary(&dev, op).unwrap();
                    assert_tensors_close(&format!("{op:?} {dtype} n={n}"), &got, &want);
                }
            }
        }
    });
}

#[test]
fn gpu_binary_broadcast_matches_cpu() {
    with_gpu(|gpu| {
        let cases: [(&[usize], &[usize]); 5] = [
            (&[7, 13], &[7, 13]),
            (&[2, 5, 9], &[9]),
            (&[2, 1, 9], &[1, 5, 1]),
            (&[1], &[3, 4]),
            (&[2, 3, 1, 5], &[3, 4, 1]),
        ];
        for dtype in DTYPES {
            for (i, (sa, sb)) in cases.iter().enumerate() {
                let (ca, ga) = random_pair(gpu, sa, dtype, 100 + i as u64);
                let (cb, gb) = random_pair(gpu, sb, dtype, 200 + i as u64);
                for op in [Binary::Add, Binary::Sub, Binary::Mul] {
                    let want = binary(&ca, &cb, op).unwrap();
                    let got = binary(&ga, &gb, op).unwrap();
                    assert_tensors_close(&format!("{op:?} {dtype} {sa:?} {sb:?}"), &got, &want);
                }
            }
        }
    });
}

#[test]
fn gpu_geglu_and_cast_match_cpu() {
    with_gpu(|gpu| {
        for dtype in DTYPES {
            let (cpu, dev) = random_pair(gpu, &[3, 5, 2 * 37], dtype, 7);
            assert_tensors_close(
                &format!("geglu {dtype}"),
                &geglu(&dev).unwrap(),
                &geglu(&cpu).unwrap(),
            );
        }
        let (cpu, dev) = random_pair(gpu, &[1001], DType::F32, 8);
        let half = cast(&dev, DType::F16).unwrap();
        assert_eq!(half.dtype(), DType::F16);
        let (atol, rtol) = tolerance(DType::F16);
        let back = cast(&half, DType::F32).unwrap().to_vec_f32().unwrap();
        assert_close(
            "cast round trip",
            &back,
            &cpu.to_vec_f32().unwrap(),
            atol,
            rtol,
        );
    });
}

#[test]
fn bad_inputs_are_errors() {
    let a = Tensor::from_f32(&Device::Cpu, &[2, 3], DType::F32, &[0.0; 6]).unwrap();
    let h = Tensor::from_f32(&Device::Cpu, &[2, 3], DType::F16, &[0.0; 6]).unwrap();
    assert!(add(&a, &h).unwrap_err().to_string().contains("add"));
    let odd = Tensor::from_f32(&Device::Cpu, &[3], DType::F32, &[0.0; 3]).unwrap();
    assert!(geglu(&odd).unwrap_err().to_string().contains("even"));
    let empty = Tensor::from_f32(&Device::Cpu, &[0, 3], DType::F32, &[]).unwrap();
    assert!(silu(&empty).unwrap_err().to_string().contains("zero-size"));
    let ids = Tensor::from_u32(&Device::Cpu, &[2], &[1, 2]).unwrap();
    assert!(silu(&ids).unwrap_err().to_string().contains("u32"));
}

#[test]
fn tensors_on_different_devices_are_an_error() {
    with_gpu(|gpu| {
        let (cpu, dev) = random_pair(gpu, &[4], DType::F32, 1);
        let err = add(&cpu, &dev).unwrap_err().to_string();
        assert!(err.contains("add") && err.contains("cpu"), "{err}");
    });
}

#[test]
fn cpu_swiglu_matches_closed_form() {
    let g = [-3.0f32, -0.5, 0.0, 0.7, 4.0];
    let u = [2.0f32, -1.0, 5.0, 3.0, -0.25];
    let gate = Tensor::from_f32(&Device::Cpu, &[5], DType::F32, &g).unwrap();
    let up = Tensor::from_f32(&Device::Cpu, &[5], DType::F32, &u).unwrap();
    let got = swiglu(&gate, &up).unwrap().to_vec_f32().unwrap();
    let want: Vec<f32> = g
        .iter()
        .zip(&u)
        .map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
        .collect();
    assert_close("swiglu", &got, &want, 1e-6, 1e-6);
    // In f32 the fused op is the same arithmetic as silu then mul (in f16 the two-pass form rounds
    // silu's output too).
    let two_pass = mul(&silu(&gate).unwrap(), &up)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    assert_close("swiglu vs silu * up", &got, &two_pass, 1e-6, 1e-6);
}

#[test]
fn gpu_swiglu_matches_cpu() {
    with_gpu(|gpu| {
        for dtype in DTYPES {
            // Odd lengths: one element, a non-multiple of the workgroup, several workgroups.
            for (i, shape) in [vec![1usize], vec![3, 89], vec![5, 7, 97]]
                .iter()
                .enumerate()
            {
                let (cg, gg) = random_pair(gpu, shape, dtype, 40 + i as u64);
                let (cu, gu) = random_pair(gpu, shape, dtype, 50 + i as u64);
                let want = swiglu(&cg, &cu).unwrap();
                let got = swiglu(&gg, &gu).unwrap();
                assert_eq!(got.shape(), &shape[..]);
                assert_tensors_close(&format!("swiglu {dtype} {shape:?}"), &got, &want);
            }
        }
    });
}

#[test]
fn swiglu_bad_inputs_are_errors() {
    let a = Tensor::from_f32(&Device::Cpu, &[2, 3], DType::F32, &[0.0; 6]).unwrap();
    let b = Tensor::from_f32(&Device::Cpu, &[3, 2], DType::F32, &[0.0; 6]).unwrap();
    let err = swiglu(&a, &b).unwrap_err().to_string();
    assert!(
        err.contains("swiglu") && err.contains("[2, 3]") && err.contains("[3, 2]"),
        "{err}"
    );
    let h = Tensor::from_f32(&Device::Cpu, &[2, 3], DType::F16, &[0.0; 6]).unwrap();
    let err = swiglu(&a, &h).unwrap_err().to_string();
    assert!(err.contains("swiglu") && err.contains("f16"), "{err}");
    let empty = Tensor::from_f32(&Device::Cpu, &[0], DType::F32, &[]).unwrap();
    assert!(swiglu(&empty, &empty)
        .unwrap_err()
        .to_string()
        .contains("zero-size"));
    with_gpu(|gpu| {
        let err = swiglu(&a, &a.to_device(gpu).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("swiglu") && err.contains("cpu"), "{err}");
    });
}
