//! Weight loading from safetensors: dtypes, conversions, missing and malformed files.

use std::path::PathBuf;

use half::{bf16, f16};
use kiln_kernels::testing::with_gpu;
use kiln_runtime::loader::{write_safetensors, WeightFile};
use kiln_runtime::{DType, Device};
use safetensors::Dtype;

fn temp_path(name: &str) -> PathBuf {
    kiln_tests::temp::dir("loader").join(name)
}

fn bytes_of<T: Copy>(values: &[T], to_le: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}

fn sample_file(name: &str) -> PathBuf {
    let path = temp_path(name);
    let f32s = [1.0f32, -2.5, 3.0, 0.125, 7.0, -8.0];
    let tensors = vec![
        (
            "unet.conv_in.weight",
            Dtype::F32,
            vec![2, 3],
            bytes_of(&f32s, |v| v.to_le_bytes().to_vec()),
        ),
        (
            "unet.conv_in.bias",
            Dtype::F16,
            vec![3],
            bytes_of(&[0.5f32, 1.5, -1.0], |v| {
                f16::from_f32(v).to_le_bytes().to_vec()
            }),
        ),
        (
            "vae.scale",
            Dtype::BF16,
            vec![2],
            bytes_of(&[0.18215f32, 2.0], |v| {
                bf16::from_f32(v).to_le_bytes().to_vec()
            }),
        ),
        (
            "ids",
            Dtype::I64,
            vec![2],
            bytes_of(&[1i64, 2], |v| v.to_le_bytes().to_vec()),
        ),
    ];
    write_safetensors(&path, &tensors).unwrap();
    path
}

#[test]
fn loads_f32_f16_and_bf16_on_the_cpu() {
    let file = WeightFile::open(sample_file("cpu.safetensors")).unwrap();
    assert_eq!(
        file.names(),
        [
            "ids",
            "unet.conv_in.bias",
            "unet.conv_in.weight",
            "vae.scale"
        ]
    );
    let w = file
        .load("unet.conv_in.weight", &Device::Cpu, None)
        .unwrap();
    assert_eq!((w.shape(), w.dtype()), (&[2usize, 3][..], DType::F32));
    assert_eq!(w.to_vec_f32().unwrap(), [1.0, -2.5, 3.0, 0.125, 7.0, -8.0]);
    let b = file.load("unet.conv_in.bias", &Device::Cpu, None).unwrap();
    assert_eq!(b.dtype(), DType::F16);
    assert_eq!(b.to_vec_f32().unwrap(), [0.5, 1.5, -1.0]);
    // bf16 becomes f32 unless asked otherwise.
    let s = file.load("vae.scale", &Device::Cpu, None).unwrap();
    assert_eq!(s.dtype(), DType::F32);
    assert_eq!(
        s.to_vec_f32().unwrap(),
        [bf16::from_f32(0.18215).to_f32(), 2.0]
    );
    // Conversions on request.
    let w16 = file
        .load("unet.conv_in.weight", &Device::Cpu, Some(DType::F16))
        .unwrap();
    assert_eq!(w16.dtype(), DType::F16);
    assert_eq!(
        w16.to_vec_f32().unwrap(),
        [1.0, -2.5, 3.0, 0.125, 7.0, -8.0]
    );
    let b32 = file
        .load("unet.conv_in.bias", &Device::Cpu, Some(DType::F32))
        .unwrap();
    assert_eq!(b32.dtype(), DType::F32);
}

#[test]
fn loads_straight_onto_the_gpu() {
    with_gpu(|gpu| {
        let file = WeightFile::open(sample_file("gpu.safetensors")).unwrap();
        let w = file.load("unet.conv_in.weight", gpu, None).unwrap();
        assert!(!w.device().is_cpu());
        assert_eq!(w.to_vec_f32().unwrap(), [1.0, -2.5, 3.0, 0.125, 7.0, -8.0]);
        let s = file.load("vae.scale", gpu, Some(DType::F16)).unwrap();
        assert_eq!(s.dtype(), DType::F16);
        assert!((s.to_vec_f32().unwrap()[0] - 0.18215).abs() < 1e-3);
    });
}

#[test]
fn a_missing_tensor_names_the_file_and_close_names() {
    let path = sample_file("missing.safetensors");
    let file = WeightFile::open(&path).unwrap();
    let err = file
        .load("unet.conv_in.weigth", &Device::Cpu, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.safetensors"), "{err}");
    assert!(
        err.contains("unet.conv_in.weigth") && err.contains("close names: unet.conv_in.weight"),
        "{err}"
    );
}

#[test]
fn wrong_shapes_and_dtypes_are_named() {
    let file = WeightFile::open(sample_file("shapes.safetensors")).unwrap();
    let err = file
        .load_shaped("unet.conv_in.weight", &[3, 2], &Device::Cpu, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unet.conv_in.weight") && err.contains("[2, 3]") && err.contains("[3, 2]"),
        "{err}"
    );
    let err = file
        .load("ids", &Device::Cpu, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ids") && err.contains("I64"), "{err}");
}

#[test]
fn truncated_and_corrupt_files_are_errors_not_panics() {
    let good = std::fs::read(sample_file("good.safetensors")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.safetensors", vec![]),
        ("short.safetensors", good[..5].to_vec()),
        ("truncated.safetensors", good[..good.len() - 3].to_vec()),
        ("header.safetensors", {
            let mut b = good.clone();
            b[8] = b'#'; // the opening brace of the JSON header
            b
        }),
        ("huge-header.safetensors", {
            let mut b = good.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
    ];
    for (name, bytes) in cases {
        let path = temp_path(name);
        std::fs::write(&path, bytes).unwrap();
        let err = WeightFile::open(&path).unwrap_err().to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
    let err = WeightFile::open(temp_path("does-not-exist.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does-not-exist.safetensors") && err.contains("cannot open"),
        "{err}"
    );
}
