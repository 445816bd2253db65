//! AutoencoderKL against diffusers (fixture from tools/make_vae_fixtures.py: block_out_channels
//! [16, 32], layers_per_block 1, norm_num_groups 8, latent_channels 4, mid attention on, random
//! weights; goldens computed in float64 from the f32 weights).
//!
//! Tolerances, |err| <= atol + rtol |want| (outputs have std ~0.6-1.6 and peaks ~3-10):
//! - f32, CPU and GPU: atol 1e-4, rtol 1e-4 for the latent mean / logvar / sample and for the decoded
//!   image (about 20 layers of f32 rounding against a float64 reference; observed max 5e-6 on the
//!   CPU and on llvmpipe).
//! - f16 weights and activations on the GPU: atol 5e-2, rtol 2e-2 (f16 keeps 11 bits; GroupNorm
//!   statistics and softmax are accumulated in f32 but every activation is rounded to f16; observed
//!   max 1.1e-2, on the sample, whose values reach 10, on llvmpipe).

use std::path::{Path, PathBuf};

use kiln_kernels::testing::{assert_close, with_gpu};
use kiln_models::vae::{latents_from, AutoencoderKL, VaeConfig};
use kiln_nn::weights::Weights;
use kiln_runtime::loader::{write_safetensors, WeightFile};
use kiln_runtime::{DType, Device, Tensor};
use kiln_tests::golden::{f32s, max_err};
use kiln_tests::{fixtures, temp, with_f16_gpu};
use safetensors::{Dtype, SafeTensors};

const F32_TOL: (f32, f32) = (1e-4, 1e-4);
const F16_TOL: (f32, f32) = (5e-2, 2e-2);
const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

fn fixture() -> PathBuf {
    fixtures().join("tiny-sd1/vae")
}

/// The golden tensors by name: (shape, values).
struct Golden(Vec<(String, Vec<usize>, Vec<f32>)>);

impl Golden {
    fn load() -> Golden {
        let bytes = std::fs::read(fixture().join("golden.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        Golden(
            st.tensors()
                .into_iter()
                .map(|(name, t)| {
                    assert_eq!(t.dtype(), Dtype::F32, "{name}");
                    let values = f32s(t.data());
                    (name, t.shape().to_vec(), values)
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> (&[usize], &[f32]) {
        let (_, shape, values) = self.0.iter().find(|(n, _, _)| n == name).unwrap();
        (shape, values)
    }

    /// The golden `name` as an f32 tensor on `device`.
    fn tensor(&self, name: &str, device: &Device) -> Tensor {
        let (shape, values) = self.get(name);
        Tensor::from_f32(device, shape, DType::F32, values).unwrap()
    }
}

fn load(weights_file: &Path, device: &Device, dtype: DType) -> kiln_runtime::Result<AutoencoderKL> {
    let cfg = VaeConfig::from_file(fixture().join("config.json"))?;
    let weights = Weights::new(vec![WeightFile::open(weights_file)?], device, dtype);
    AutoencoderKL::new(&cfg, &weights)
}

/// Encodes both golden images, samples with the golden noise, decodes both golden latents, and
/// compares everything with diffusers.
fn check(device: &Device, dtype: DType, (atol, rtol): (f32, f32)) {
    let g = Golden::load();
    let model = load(&fixture().join(WEIGHTS), device, dtype).unwrap();
    assert_eq!(model.dtype(), device.float_dtype(dtype));
    let compare = |what: &str, got: &Tensor, want: &str| {
        let (shape, want) = g.get(want);
        assert_eq!(got.shape(), shape, "{what}");
        assert_eq!(got.dtype(), model.dtype(), "{what}");
        assert!(got.device() == device, "{what} is not on {}", device.name());
        let got = got.to_vec_f32().unwrap();
        let what = format!("{} {dtype:?} {what}", device.name());
        eprintln!("{what}: max |err| {:e}", max_err(&got, want));
        assert_close(&what, &got, want, atol, rtol);
    };

    let dist = model.encode(&g.tensor("image", device)).unwrap();
    compare("mean", &dist.mean, "mean");
    compare("mode", dist.mode(), "mean");
    compare("logvar", &dist.logvar, "logvar");
    let sample = dist.sample(&g.tensor("noise", &Device::Cpu)).unwrap();
    compare("sample", &sample, "sample");
    let decoded = model.decode(&g.tensor("latents", device)).unwrap();
    compare("decoded", &decoded, "decoded");

    let dist = model.encode(&g.tensor("image_b2", device)).unwrap();
    compare("mean (batch 2, 16x24)", &dist.mean, "mean_b2");
    compare("logvar (batch 2, 16x24)", &dist.logvar, "logvar_b2");
    let decoded = model.decode(&g.tensor("latents_b2", device)).unwrap();
    compare("decoded (batch 2, 8x12)", &decoded, "decoded_b2");
}

#[test]
fn matches_diffusers_on_cpu() {
    check(&Device::Cpu, DType::F32, F32_TOL);
}

#[test]
fn matches_diffusers_on_gpu_f32() {
    with_gpu(|gpu| check(gpu, DType::F32, F32_TOL));
}

#[test]
fn matches_diffusers_on_gpu_f16() {
    with_f16_gpu(|gpu| check(gpu, DType::F16, F16_TOL));
}

#[test]
fn latent_scaling_follows_the_config() {
    let model = load(&fixture().join(WEIGHTS), &Device::Cpu, DType::F32).unwrap();
    let z = Tensor::from_f32(
        &Device::Cpu,
        &[1, 4, 1, 1],
        DType::F32,
        &[1.0, -2.0, 0.5, 0.0],
    )
    .unwrap();
    let scaled = model.scale_latents(&z).unwrap().to_vec_f32().unwrap();
    let want: Vec<f32> = [1.0f32, -2.0, 0.5, 0.0]
        .iter()
        .map(|v| v * 0.18215)
        .collect();
    assert_close("scale_latents", &scaled, &want, 1e-7, 1e-6);
    let back = model
        .unscale_latents(&model.scale_latents(&z).unwrap())
        .unwrap();
    assert_close(
        "unscale_latents",
        &back.to_vec_f32().unwrap(),
        &z.to_vec_f32().unwrap(),
        1e-6,
        1e-6,
    );
}

#[test]
fn f32_inputs_are_cast_to_an_f16_model() {
    with_gpu(|gpu| {
        if gpu.float_dtype(DType::F16) != DType::F16 {
            return;
        }
        let g = Golden::load();
        let model = load(&fixture().join(WEIGHTS), gpu, DType::F16).unwrap();
        let out = model.decode(&g.tensor("latents_b2", gpu)).unwrap();
        assert_eq!(out.dtype(), DType::F16);
    });
}

fn temp_dir() -> PathBuf {
    temp::dir("vae")
}

/// A copy of the fixture's weights with each tensor passed through `edit(name, shape, bytes)`, which
/// returns its new (name, shape, bytes).
fn edited_weights(
    dst: &Path,
    edit: impl Fn(&str, &[usize], &[u8]) -> (String, Vec<usize>, Vec<u8>),
) {
    let bytes = std::fs::read(fixture().join(WEIGHTS)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            assert_eq!(t.dtype(), Dtype::F32);
            edit(&n, t.shape(), t.data())
        })
        .collect();
    let tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = owned
        .iter()
        .map(|(n, s, b)| (n.as_str(), Dtype::F32, s.clone(), b.clone()))
        .collect();
    write_safetensors(dst, &tensors).unwrap();
}

#[test]
fn wrong_shaped_weight_is_named_with_both_shapes() {
    let bad = temp_dir().join("wrong_downsampler.safetensors");
    let name = "encoder.down_blocks.0.downsamplers.0.conv.weight";
    edited_weights(&bad, |n, shape, data| {
        if n == name {
            (n.to_string(), vec![16, 16, 1, 1], vec![0; 16 * 16 * 4])
        } else {
            (n.to_string(), shape.to_vec(), data.to_vec())
        }
    });
    let err = load(&bad, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(name), "{err}");
    assert!(
        err.contains("[16, 16, 1, 1]") && err.contains("expected [16, 16, 3, 3]"),
        "{err}"
    );
}

#[test]
fn missing_weights_are_named() {
    let dir = fixture();
    let file = || WeightFile::open(dir.join(WEIGHTS)).unwrap();
    let mut cfg = VaeConfig::from_file(dir.join("config.json")).unwrap();
    cfg.layers_per_block = 2;
    let weights = Weights::new(vec![file()], &Device::Cpu, DType::F32);
    let err = AutoencoderKL::new(&cfg, &weights)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("encoder.down_blocks.0.resnets.1."), "{err}");

    // A config that does not validate is refused before any weight is read.
    let mut cfg = VaeConfig::from_file(dir.join("config.json")).unwrap();
    cfg.norm_num_groups = 5;
    let err = AutoencoderKL::new(&cfg, &weights)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("norm_num_groups"), "{err}");
}

/// Checkpoints saved before diffusers 0.14 name the mid attention's projections query / key / value /
/// proj_attn; they load to the same model.
#[test]
fn legacy_attention_names_load() {
    let legacy = temp_dir().join("legacy_attention.safetensors");
    edited_weights(&legacy, |n, shape, data| {
        let n = n
            .replace(".to_q.", ".query.")
            .replace(".to_k.", ".key.")
            .replace(".to_v.", ".value.")
            .replace(".to_out.0.", ".proj_attn.");
        (n, shape.to_vec(), data.to_vec())
    });
    let g = Golden::load();
    let model = load(&legacy, &Device::Cpu, DType::F32).unwrap();
    let out = model.decode(&g.tensor("latents", &Device::Cpu)).unwrap();
    let (atol, rtol) = F32_TOL;
    assert_close(
        "decoded with legacy names",
        &out.to_vec_f32().unwrap(),
        g.get("decoded").1,
        atol,
        rtol,
    );
}

#[test]
fn wrong_inputs_are_errors() {
    let model = load(&fixture().join(WEIGHTS), &Device::Cpu, DType::F32).unwrap();
    let zeros = |shape: &[usize]| Tensor::zeros(&Device::Cpu, shape, DType::F32).unwrap();

    let e = model.encode(&zeros(&[1, 4, 8, 8])).unwrap_err().to_string();
    assert!(
        e.contains("image") && e.contains("[1, 4, 8, 8]") && e.contains("in_channels"),
        "{e}"
    );
    let e = model.encode(&zeros(&[3, 8, 8])).unwrap_err().to_string();
    assert!(e.contains("image") && e.contains("[3, 8, 8]"), "{e}");
    let e = model.decode(&zeros(&[1, 3, 4, 4])).unwrap_err().to_string();
    assert!(
        e.contains("latents") && e.contains("[1, 3, 4, 4]") && e.contains("latent_channels"),
        "{e}"
    );

    let (mean, noise) = (zeros(&[1, 4, 2, 2]), zeros(&[1, 4, 2, 3]));
    let e = latents_from(&mean, &mean, &noise).unwrap_err().to_string();
    assert!(
        e.contains("noise") && e.contains("[1, 4, 2, 3]") && e.contains("[1, 4, 2, 2]"),
        "{e}"
    );
}

#[test]
fn odd_image_sizes_round_down_like_diffusers() {
    // F.pad(x, (0, 1, 0, 1)) then a stride-2 3x3 conv: 33 -> 16, 15 -> 7.
    let model = load(&fixture().join(WEIGHTS), &Device::Cpu, DType::F32).unwrap();
    let image = Tensor::zeros(&Device::Cpu, &[1, 3, 33, 15], DType::F32).unwrap();
    let dist = model.encode(&image).unwrap();
    assert_eq!(dist.mean.shape(), [1, 4, 16, 7]);
}
