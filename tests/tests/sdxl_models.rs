//! SDXL's networks against diffusers / transformers on the tiny SDXL fixture (tests/fixtures/tiny-sdxl,
//! tools/make_sdxl_fixtures.py; goldens from tools/make_sdxl_goldens.py): the UNet with added
//! conditioning (`text_time`: pooled text embedding + 6 time ids) and both text encoders
//! (CLIPTextModel 32 wide, CLIPTextModelWithProjection 48 wide with a 40-wide projection).
//!
//! Tolerances:
//! - UNet, f32: max |error| <= 2e-5 x output scale (tests/tests/unet.rs's bound: only summation
//!   order differs); f16 on the GPU: 1e-2 x scale.
//! - Text encoders (hidden states without the final LayerNorm, goldens in float64):
//!   |err| <= 1e-4 + 1e-4 |want| in f32 on the CPU and the GPU (tests/tests/clip.rs's bound).

use std::path::PathBuf;

use kiln_kernels::testing::{assert_close, with_gpu};
use kiln_models::clip::{ClipTextConfig, ClipTextModel, ClipTextModelWithProjection};
use kiln_models::unet::{AddedCond, Unet};
use kiln_nn::weights::Weights;
use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Tensor};
use kiln_tests::fixtures;
use kiln_tests::golden::{self, max_err};
use safetensors::{Dtype, SafeTensors};

const UNET_F32: f32 = 2e-5;
const UNET_F16: f32 = 1e-2;
const CLIP_F32: (f32, f32) = (1e-4, 1e-4);

fn fixture(part: &str) -> PathBuf {
    fixtures().join("tiny-sdxl").join(part)
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    (t.shape().to_vec(), golden::f32s(t.data()))
}

fn check_unet(device: &Device, dtype: DType, tolerance: f32) {
    let unet = Unet::load(fixture("unet"), device, dtype).unwrap();
    let file = WeightFile::open(fixture("unet/golden.safetensors")).unwrap();
    let get = |name: &str| file.load(name, device, Some(DType::F32)).unwrap();
    let (text_embeds, time_ids) = (get("text_embeds"), get("time_ids"));
    let added = AddedCond {
        text_embeds: &text_embeds,
        time_ids: &time_ids,
    };
    let got = unet
        .forward_with(
            &get("sample"),
            &get("timesteps"),
            &get("encoder_hidden_states"),
            Some(added),
        )
        .unwrap();
    let want = get("out");
    assert_eq!(got.shape(), want.shape());
    let (got, want) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = max_err(&got, &want);
    let what = format!("tiny-sdxl unet on {} ({:?})", device.name(), unet.dtype());
    eprintln!("{what}: max |err| {err:.3e}, output scale {scale:.3}");
    assert!(
        err.is_finite() && err <= tolerance * scale,
        "{what}: {err} over {tolerance} x {scale}"
    );
}

#[test]
fn unet_with_added_conditioning_matches_diffusers_on_the_cpu() {
    check_unet(&Device::Cpu, DType::F32, UNET_F32);
}

#[test]
fn unet_with_added_conditioning_matches_diffusers_on_the_gpu() {
    with_gpu(|gpu| {
        check_unet(gpu, DType::F32, UNET_F32);
        if gpu.supports(DType::F16) {
            check_unet(gpu, DType::F16, UNET_F16);
        }
    });
}

#[test]
fn unet_without_or_with_wrong_added_inputs_is_refused() {
    let unet = Unet::load(fixture("unet"), &Device::Cpu, DType::F32).unwrap();
    let file = WeightFile::open(fixture("unet/golden.safetensors")).unwrap();
    let get = |name: &str| file.load(name, &Device::Cpu, Some(DType::F32)).unwrap();
    let (sample, t, ehs) = (
        get("sample"),
        get("timesteps"),
        get("encoder_hidden_states"),
    );
    let err = unet.forward(&sample, &t, &ehs).unwrap_err().to_string();
    assert!(
        err.contains("text_time") && err.contains("time_ids"),
        "{err}"
    );
    // Five time ids: 40 + 5 x 8 = 80, not projection_class_embeddings_input_dim 88.
    let five = Tensor::from_f32(&Device::Cpu, &[2, 5], DType::F32, &[1.0; 10]).unwrap();
    let text_embeds = get("text_embeds");
    let added = AddedCond {
        text_embeds: &text_embeds,
        time_ids: &five,
    };
    let err = unet
        .forward_with(&sample, &t, &ehs, Some(added))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("projection_class_embeddings_input_dim 88") && err.contains("[2, 5]"),
        "{err}"
    );
}

fn golden_ids(st: &SafeTensors) -> (Vec<usize>, Vec<u32>) {
    let t = st.tensor("input_ids").unwrap();
    assert_eq!(t.dtype(), Dtype::I64);
    let ids = t
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    (t.shape().to_vec(), ids)
}

fn weights(folder: &str, device: &Device) -> (ClipTextConfig, Weights) {
    let dir = fixture(folder);
    let cfg = ClipTextConfig::from_file(dir.join("config.json")).unwrap();
    let file = WeightFile::open(dir.join("model.safetensors")).unwrap();
    (cfg, Weights::new(vec![file], device, DType::F32))
}

fn check_text_encoders(device: &Device) {
    let (atol, rtol) = CLIP_F32;
    // text_encoder: hidden states -2 and -3 without the final LayerNorm (clip skip 1 and 2).
    let bytes = std::fs::read(fixture("text_encoder/golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (shape, ids) = golden_ids(&st);
    let ids = Tensor::from_u32(&Device::Cpu, &shape, &ids).unwrap();
    let (cfg, w) = weights("text_encoder", device);
    let te1 = ClipTextModel::new(&cfg, &w).unwrap();
    for (layer, name) in [(2, "hidden_states_m2"), (3, "hidden_states_m3")] {
        let got = te1
            .hidden_state(&ids, &[], layer)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let what = format!("text_encoder {name} on {}", device.name());
        eprintln!("{what}: max |err| {:e}", max_err(&got, &f32s(&st, name).1));
        assert_close(&what, &got, &f32s(&st, name).1, atol, rtol);
    }

    // text_encoder_2: the same, plus the projected pooled output.
    let bytes = std::fs::read(fixture("text_encoder_2/golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (shape, ids) = golden_ids(&st);
    let ids = Tensor::from_u32(&Device::Cpu, &shape, &ids).unwrap();
    let (cfg, w) = weights("text_encoder_2", device);
    let te2 = ClipTextModelWithProjection::new(&cfg, &w).unwrap();
    for (layer, name) in [(2, "hidden_states_m2"), (3, "hidden_states_m3")] {
        let out = te2.encode(&ids, &[], layer).unwrap();
        let (pshape, pooled) = f32s(&st, "text_embeds");
        assert_eq!(out.text_embeds.shape(), pshape.as_slice());
        for (o, got, want) in [
            (name, &out.hidden_states, f32s(&st, name).1),
            ("text_embeds", &out.text_embeds, pooled),
        ] {
            let got = got.to_vec_f32().unwrap();
            let what = format!("text_encoder_2 {o} (layer -{layer}) on {}", device.name());
            eprintln!("{what}: max |err| {:e}", max_err(&got, &want));
            assert_close(&what, &got, &want, atol, rtol);
        }
    }
}

#[test]
fn text_encoders_match_transformers_on_the_cpu() {
    check_text_encoders(&Device::Cpu);
}

#[test]
fn text_encoders_match_transformers_on_the_gpu() {
    with_gpu(check_text_encoders);
}

#[test]
fn a_missing_text_projection_names_it() {
    // text_encoder/ (a CLIPTextModel) has no text_projection.weight.
    let (mut cfg, w) = weights("text_encoder", &Device::Cpu);
    cfg.projection_dim = 40;
    let err = ClipTextModelWithProjection::new(&cfg, &w)
        .err()
        .expect("no projection")
        .to_string();
    assert!(err.contains("text_projection.weight"), "{err}");
}
