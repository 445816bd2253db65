//! UNet2DConditionModel against diffusers: tiny random-weight SD 1.x, SD 2.x and SD 1.x inpainting
//! UNets (tools/make_unet_fixtures.py) run on fixed inputs, on the CPU backend and on the GPU under
//! test, compared with the outputs diffusers recorded. The inpainting fixture also has SD 1.5's full
//! topology (4 levels, 2 resnets per down block, 3 per up block).
//!
//! Tolerances, relative to the output scale (max |diffusers output|, about 1.4-1.5 here):
//! - f32: max |error| <= 2e-5 x scale (measured about 1.5e-6 on the CPU backend and on llvmpipe):
//!   only summation order differs from PyTorch.
//! - f16 (GPU only, weights and activations in f16): max |error| <= 1e-2 x scale (measured about
//!   2e-3 on llvmpipe): every kernel rounds its output to 11 significant bits.

use std::path::PathBuf;

use kiln_kernels::testing::with_gpu;
use kiln_models::unet::{Unet, UnetConfig};
use kiln_nn::weights::Weights;
use kiln_runtime::loader::{write_safetensors, WeightFile};
use kiln_runtime::{DType, Device, Tensor};
use kiln_tests::{fixtures, temp, with_f16_gpu};

const F32_TOLERANCE: f32 = 2e-5;
const F16_TOLERANCE: f32 = 1e-2;

fn fixture(variant: &str) -> PathBuf {
    fixtures().join(variant).join("unet")
}

struct Golden {
    sample: Tensor,
    timesteps: Tensor,
    encoder_hidden_states: Tensor,
    out: Tensor,
}

fn golden(variant: &str, file_name: &str, device: &Device) -> Golden {
    let file = WeightFile::open(fixture(variant).join(file_name)).unwrap();
    let get = |name: &str| file.load(name, device, Some(DType::F32)).unwrap();
    Golden {
        sample: get("sample"),
        timesteps: get("timesteps"),
        encoder_hidden_states: get("encoder_hidden_states"),
        out: get("out"),
    }
}

/// Runs the fixture on `device` in `dtype` and checks max |error| <= tolerance x max |want|.
fn check(variant: &str, device: &Device, dtype: DType, tolerance: f32) {
    check_file(variant, "golden.safetensors", device, dtype, tolerance);
}

fn check_file(variant: &str, file_name: &str, device: &Device, dtype: DType, tolerance: f32) {
    let unet = Unet::load(fixture(variant), device, dtype).unwrap();
    let g = golden(variant, file_name, device);
    let got = unet
        .forward(&g.sample, &g.timesteps, &g.encoder_hidden_states)
        .unwrap();
    assert_eq!(got.shape(), g.out.shape(), "{variant}: output shape");
    assert_eq!(got.dtype(), unet.dtype(), "{variant}: output dtype");
    let (got, want) = (got.to_vec_f32().unwrap(), g.out.to_vec_f32().unwrap());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!(
        "{variant} on {} ({:?}): max |err| {err:.3e}, output scale {scale:.3}",
        device.name(),
        unet.dtype()
    );
    assert!(
        err.is_finite() && err <= tolerance * scale,
        "{variant} on {} ({:?}): max |err| {err} over {tolerance} x {scale}",
        device.name(),
        unet.dtype()
    );
}

#[test]
fn sd1_matches_diffusers_on_the_cpu() {
    check("tiny-sd1", &Device::Cpu, DType::F32, F32_TOLERANCE);
}

#[test]
fn sd2_matches_diffusers_on_the_cpu() {
    check("tiny-sd2", &Device::Cpu, DType::F32, F32_TOLERANCE);
}

#[test]
fn inpainting_matches_diffusers_on_the_cpu() {
    check("tiny-sd1-inpaint", &Device::Cpu, DType::F32, F32_TOLERANCE);
}

/// Latents the downsamplings do not divide (13x11 through four levels: 13 -> 7 -> 4 -> 2 and back;
/// 9x7 through two): diffusers upsamples each level to its skip's size, and so must kiln.
#[test]
fn odd_latent_sizes_match_diffusers() {
    for variant in ["tiny-sd1-inpaint", "tiny-sd1"] {
        check_file(
            variant,
            "golden_odd.safetensors",
            &Device::Cpu,
            DType::F32,
            F32_TOLERANCE,
        );
    }
    with_gpu(|gpu| {
        check_file(
            "tiny-sd1-inpaint",
            "golden_odd.safetensors",
            gpu,
            DType::F32,
            F32_TOLERANCE,
        );
    });
}

#[test]
fn all_variants_match_diffusers_on_the_gpu_in_f32() {
    with_gpu(|gpu| {
        for variant in ["tiny-sd1", "tiny-sd2", "tiny-sd1-inpaint"] {
            check(variant, gpu, DType::F32, F32_TOLERANCE);
        }
    });
}

#[test]
fn all_variants_match_diffusers_on_the_gpu_in_f16() {
    with_f16_gpu(|gpu| {
        for variant in ["tiny-sd1", "tiny-sd2", "tiny-sd1-inpaint"] {
            check(variant, gpu, DType::F16, F16_TOLERANCE);
        }
    });
}

#[test]
fn one_timestep_is_shared_by_the_batch() {
    // diffusers expands a single timestep to the batch; item 1 of the fixture uses t = 10.
    let unet = Unet::load(fixture("tiny-sd1"), &Device::Cpu, DType::F32).unwrap();
    let g = golden("tiny-sd1", "golden.safetensors", &Device::Cpu);
    let t = Tensor::from_f32(&Device::Cpu, &[1], DType::F32, &[10.0]).unwrap();
    let shared = unet
        .forward(&g.sample, &t, &g.encoder_hidden_states)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let want = g.out.to_vec_f32().unwrap();
    let half = want.len() / 2;
    let err = shared[half..]
        .iter()
        .zip(&want[half..])
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 1e-4, "batch item 1 with a shared timestep: {err}");
}

fn temp_dir(name: &str) -> PathBuf {
    temp::dir(&format!("unet-{name}"))
}

#[test]
fn a_wrong_weight_shape_names_the_tensor_and_both_shapes() {
    let dir = fixture("tiny-sd1");
    let bytes = std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // attn2.to_k maps the 32-wide text states to the 8 channels of level 0: [8, 32]. Store it as
    // [32, 8] (same bytes, transposed shape).
    let victim = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    let tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut shape = view.shape().to_vec();
            if name == victim {
                assert_eq!(shape, [8, 32]);
                shape.reverse();
            }
            (name, view.dtype(), shape, view.data().to_vec())
        })
        .collect();
    let refs: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    let broken = temp_dir("wrong-shape");
    write_safetensors(&broken.join("diffusion_pytorch_model.safetensors"), &refs).unwrap();
    std::fs::copy(dir.join("config.json"), broken.join("config.json")).unwrap();

    let err = Unet::load(&broken, &Device::Cpu, DType::F32)
        .err()
        .expect("a wrong shape must fail at load")
        .to_string();
    assert!(
        err.contains(victim) && err.contains("[32, 8]") && err.contains("[8, 32]"),
        "{err}"
    );
    std::fs::remove_dir_all(broken).ok();
}

#[test]
fn a_missing_weight_is_named() {
    let dir = fixture("tiny-sd1");
    let cfg = UnetConfig::from_file(dir.join("config.json")).unwrap();
    let file = WeightFile::open(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    // Under a wrong prefix nothing is found; the error names the full name it looked for.
    let w = Weights::new(vec![file], &Device::Cpu, DType::F32).pp("unet");
    let err = Unet::new(&cfg, &w).err().unwrap().to_string();
    assert!(err.contains("unet.conv_in.weight"), "{err}");
}

#[test]
fn a_wrong_sample_channel_count_is_reported() {
    // An inpainting input (9 channels) given to a plain SD 1.x UNet (4).
    let unet = Unet::load(fixture("tiny-sd1"), &Device::Cpu, DType::F32).unwrap();
    let g = golden("tiny-sd1-inpaint", "golden.safetensors", &Device::Cpu);
    let err = unet
        .forward(&g.sample, &g.timesteps, &g.encoder_hidden_states)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`sample`") && err.contains("[B, 4, H, W]") && err.contains("[2, 9, 16, 16]"),
        "{err}"
    );
}

#[test]
fn other_bad_inputs_are_reported() {
    let unet = Unet::load(fixture("tiny-sd1"), &Device::Cpu, DType::F32).unwrap();
    let g = golden("tiny-sd1", "golden.safetensors", &Device::Cpu);
    let cpu = &Device::Cpu;
    let zeros = |shape: &[usize]| Tensor::zeros(cpu, shape, DType::F32).unwrap();
    // An empty spatial size.
    let err = unet
        .forward(
            &zeros(&[2, 4, 0, 16]),
            &g.timesteps,
            &g.encoder_hidden_states,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`sample`") && err.contains("positive"),
        "{err}"
    );
    let err = unet
        .forward(&g.sample, &zeros(&[3]), &g.encoder_hidden_states)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`timesteps`"), "{err}");
    let err = unet
        .forward(&g.sample, &g.timesteps, &zeros(&[2, 77, 16]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`encoder_hidden_states`") && err.contains("[2, L, 32]"),
        "{err}"
    );
}
