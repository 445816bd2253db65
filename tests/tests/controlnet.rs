//! ControlNet against diffusers (fixtures from tools/make_controlnet_fixtures.py in
//! tests/fixtures/controlnet: tiny random ControlNets for tests/fixtures/tiny-sd1 and tiny-sdxl).
//!
//! - `ControlNetModel`'s residuals vs diffusers' `ControlNetModel` on random inputs (plain and guess
//!   mode): max |error| <= 1e-4 + 1e-4 |want|.
//! - Complete generations vs StableDiffusionControlNetPipeline / ...Img2ImgPipeline /
//!   StableDiffusionXLControlNetPipeline (scale, guidance start / end, guess mode, two ControlNets,
//!   a batch, img2img, SDXL): max |error| <= 1e-3 on the [0, 1] image, tests/tests/pipeline.rs's
//!   bound, on the CPU backend and the GPU under test.
//! - A ControlNet for another base is refused naming both.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_kernels::testing::{assert_close, with_gpu};
use kiln_models::controlnet::{ControlInputs, ControlNetLoad, ControlNetModel, ResidualCurve};
use kiln_models::image::infotext::InfoText;
use kiln_models::image::read_image;
use kiln_models::pipeline::{
    generate, infotext, ControlMode, ControlUnit, GenerationParams, InitImage, StableDiffusion,
};
use kiln_models::preprocess::{PreprocessorSettings, ResizeMode};
use kiln_runtime::{DType, Device, Tensor};
use kiln_tests::fixtures;
use kiln_tests::golden::{self, assert_within, max_err, pixels, read_all_f32};
use kiln_tests::model::run;
use kiln_tests::params::case_params;
use serde_json::Value;

const TOL: f32 = 1e-3;

fn dir() -> PathBuf {
    fixtures().join("controlnet")
}

fn tensors(file: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    read_all_f32(&dir().join(file))
}

fn tensor(file: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let (_, shape, values) = tensors(file)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("{file} has no {name}"));
    (shape, values)
}

fn controlnet(device: &Device, name: &str) -> Arc<ControlNetModel> {
    Arc::new(
        ControlNetModel::load(
            &dir().join(name),
            device,
            &ControlNetLoad::dtype(DType::F32),
        )
        .unwrap(),
    )
}

fn check_residuals(device: &Device) {
    let net = controlnet(device, "sd1-a");
    let input = |name: &str| {
        let (shape, values) = tensor("residuals.safetensors", name);
        Tensor::from_f32(device, &shape, DType::F32, &values).unwrap()
    };
    let (sample, timesteps, context, cond) = (
        input("sample"),
        input("timesteps"),
        input("encoder_hidden_states"),
        input("controlnet_cond"),
    );
    for (tag, curve) in [
        ("plain", ResidualCurve::Flat),
        ("guess", ResidualCurve::Guess),
    ] {
        let r = net
            .forward(&ControlInputs {
                sample: &sample,
                timesteps: &timesteps,
                context: &context,
                added: None,
                cond: &cond,
                scale: 0.7,
                curve,
            })
            .unwrap();
        assert_eq!(r.down.len(), 4, "skip connections of the tiny SD1 UNet");
        let mut worst = 0f32;
        for (i, d) in r.down.iter().enumerate() {
            let (shape, want) = tensor("residuals.safetensors", &format!("{tag}/down.{i}"));
            assert_eq!(d.shape(), shape, "{tag} down.{i}");
            let got = d.to_vec_f32().unwrap();
            assert_close(&format!("{tag}/down.{i}"), &got, &want, 1e-4, 1e-4);
            worst = worst.max(max_err(&got, &want));
        }
        let (_, want) = tensor("residuals.safetensors", &format!("{tag}/mid"));
        let got = r.mid.to_vec_f32().unwrap();
        assert_close(&format!("{tag}/mid"), &got, &want, 1e-4, 1e-4);
        worst = worst.max(max_err(&got, &want));
        eprintln!("{} residuals {tag}: max |err| {worst:e}", device.name());
    }
}

#[test]
fn residuals_match_diffusers_on_cpu() {
    check_residuals(&Device::Cpu);
}

#[test]
fn residuals_match_diffusers_on_gpu() {
    with_gpu(check_residuals);
}

/// lllyasviel's layout of sd1-a (config from the base UNet and the file's shapes) gives the
/// folder's residuals exactly: the same weights under other names.
#[test]
fn single_file_controlnet_matches_its_folder() {
    let device = Device::Cpu;
    let base = StableDiffusion::load(&fixtures().join("tiny-sd1"), &device, DType::F32).unwrap();
    let file = ControlNetModel::open(
        &dir().join("sd1-a.safetensors"),
        base.unet.config(),
        &device,
        &ControlNetLoad::dtype(DType::F32),
    )
    .unwrap();
    let folder = controlnet(&device, "sd1-a");
    let input = |name: &str| {
        let (shape, values) = tensor("residuals.safetensors", name);
        Tensor::from_f32(&device, &shape, DType::F32, &values).unwrap()
    };
    let (sample, timesteps, context, cond) = (
        input("sample"),
        input("timesteps"),
        input("encoder_hidden_states"),
        input("controlnet_cond"),
    );
    let inputs = ControlInputs {
        sample: &sample,
        timesteps: &timesteps,
        context: &context,
        added: None,
        cond: &cond,
        scale: 0.7,
        curve: ResidualCurve::Flat,
    };
    let (a, b) = (
        file.forward(&inputs).unwrap(),
        folder.forward(&inputs).unwrap(),
    );
    for (x, y) in a
        .down
        .iter()
        .chain([&a.mid])
        .zip(b.down.iter().chain([&b.mid]))
    {
        assert_eq!(x.to_vec_f32().unwrap(), y.to_vec_f32().unwrap());
    }
    // On the SDXL base it is refused before loading, naming both widths.
    let xl = StableDiffusion::load(&fixtures().join("tiny-sdxl"), &device, DType::F32).unwrap();
    let err = ControlNetModel::open(
        &dir().join("sd1-a.safetensors"),
        xl.unet.config(),
        &device,
        &ControlNetLoad::dtype(DType::F32),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("sd1-a.safetensors")
            && err.contains("cross_attention_dim 32, no added conditioning")
            && err.contains("cross_attention_dim 80, SDXL added conditioning"),
        "{err}"
    );
    // A file that is not a ControlNet says so.
    let err = ControlNetModel::open(
        &fixtures().join("tiny-sd1/unet/diffusion_pytorch_model.safetensors"),
        base.unet.config(),
        &device,
        &ControlNetLoad::dtype(DType::F32),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("not a ControlNet file"), "{err}");
}

fn cases() -> Vec<Value> {
    golden::cases(&dir().join("cases.json"))
}

fn params_for(device: &Device, case: &Value) -> GenerationParams {
    let f = |v: &Value| v.as_f64().unwrap() as f32;
    let mut p = case_params(case);
    p.batch_size = case["batch"].as_u64().unwrap() as usize;
    if case["mode"] == "img2img" {
        p.init = Some(InitImage {
            image: read_image(&fixtures().join("tiny-sd1/init.png")).unwrap(),
            mask: None,
            strength: case["strength"].as_f64().unwrap(),
        });
    }
    let image = read_image(&dir().join("control.png")).unwrap();
    let guess_mode = case["guess_mode"].as_bool().unwrap();
    p.controls = case["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let name = u["model"].as_str().unwrap();
            ControlUnit {
                model: controlnet(device, name),
                name: name.into(),
                hash: None,
                module: "none".into(),
                settings: PreprocessorSettings::defaults("none").unwrap(),
                image: image.clone(),
                resize: ResizeMode::JustResize,
                scale: f(&u["scale"]),
                guidance_start: f(&u["start"]),
                guidance_end: f(&u["end"]),
                mode: if guess_mode {
                    ControlMode::DiffusersGuess
                } else {
                    ControlMode::Balanced
                },
            }
        })
        .collect();
    p
}

fn check_all(device: &Device) {
    let sd1 = StableDiffusion::load(&fixtures().join("tiny-sd1"), device, DType::F32).unwrap();
    let sdxl = StableDiffusion::load(&fixtures().join("tiny-sdxl"), device, DType::F32).unwrap();
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let model = if case["family"] == "sdxl" {
            &sdxl
        } else {
            &sd1
        };
        let params = params_for(device, &case);
        let images = generate(model, &params, &mut |_| {}).unwrap();
        let (shape, want) = tensor("golden.safetensors", &format!("{name}/image"));
        assert_eq!(images.len(), shape[0], "{name}: image count");
        assert_within(device, name, max_err(&pixels(&images), &want), TOL);
        // The ControlNet must matter: without it the image is far from the golden.
        let mut plain = params.clone();
        plain.controls.clear();
        let moved = max_err(&run(model, &plain), &want);
        assert!(
            moved > 20.0 * TOL,
            "{name}: the ControlNet moves the image by only {moved}"
        );
    }
}

#[test]
fn controlnet_generations_match_diffusers_on_cpu() {
    check_all(&Device::Cpu);
}

#[test]
fn controlnet_generations_match_diffusers_on_gpu() {
    with_gpu(check_all);
}

#[test]
fn a_controlnet_for_another_base_is_refused_naming_both() {
    let device = Device::Cpu;
    let sd1 = StableDiffusion::load(&fixtures().join("tiny-sd1"), &device, DType::F32).unwrap();
    let mut p = GenerationParams::new("x");
    (p.width, p.height, p.steps) = (32, 32, 1);
    p.controls = vec![ControlUnit {
        model: controlnet(&device, "sdxl"),
        name: "sdxl".into(),
        hash: None,
        module: "none".into(),
        settings: PreprocessorSettings::defaults("none").unwrap(),
        image: read_image(&dir().join("control.png")).unwrap(),
        resize: ResizeMode::JustResize,
        scale: 1.0,
        guidance_start: 0.0,
        guidance_end: 1.0,
        mode: ControlMode::Balanced,
    }];
    let err = generate(&sd1, &p, &mut |_| {}).err().unwrap().to_string();
    assert!(
        err.contains("sdxl")
            && err.contains("cross_attention_dim 80")
            && err.contains("cross_attention_dim 32"),
        "{err}"
    );
    // Guidance start after end is refused before anything runs.
    let mut q = p.clone();
    q.controls[0].model = controlnet(&device, "sd1-a");
    (q.controls[0].guidance_start, q.controls[0].guidance_end) = (0.8, 0.2);
    let err = generate(&sd1, &q, &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("guidance start 0.8"), "{err}");
}

/// The ControlNet extension's infotext fields, after the others, one per unit.
#[test]
fn infotext_has_a1111_controlnet_fields() {
    let mut p = GenerationParams::new("x");
    let unit = |name: &str, scale: f32, resize: ResizeMode, mode: ControlMode| ControlUnit {
        model: controlnet(&Device::Cpu, "sd1-a"),
        name: name.into(),
        hash: Some("d14c016b".into()),
        module: "canny".into(),
        settings: PreprocessorSettings::defaults("canny").unwrap(),
        image: read_image(&dir().join("control.png")).unwrap(),
        resize,
        scale,
        guidance_start: 0.0,
        guidance_end: 0.75,
        mode,
    };
    p.controls = vec![
        unit(
            "control_v11p_sd15_canny",
            1.0,
            ResizeMode::CropAndResize,
            ControlMode::Balanced,
        ),
        unit("b", 0.5, ResizeMode::ResizeAndFill, ControlMode::ControlNet),
        unit("c", 0.5, ResizeMode::JustResize, ControlMode::Prompt),
    ];
    // A client's own resolution, thresholds and Pixel Perfect, written as the extension does.
    p.controls[1].settings =
        PreprocessorSettings::settle("canny", Some(768.0), Some(50.0), Some(150.5), true).unwrap();
    let info = infotext(&p, 1, "m", None);
    let text = info.format();
    assert!(
        text.ends_with(
            "ControlNet 0: \"Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, \
             Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 100, Threshold B: 200, \
             Guidance Start: 0.0, Guidance End: 0.75, Pixel Perfect: False, Control Mode: \
             Balanced\", ControlNet 1: \"Module: canny, Model: b [d14c016b], Weight: 0.5, Resize \
             Mode: Resize and Fill, Processor Res: 768, Threshold A: 50.0, Threshold B: 150.5, \
             Guidance Start: 0.0, Guidance End: 0.75, Pixel Perfect: True, Control Mode: \
             ControlNet is more important\", ControlNet 2: \"Module: canny, Model: c [d14c016b], \
             Weight: 0.5, Resize Mode: Just Resize, Processor Res: 512, Threshold A: 100, Threshold \
             B: 200, Guidance Start: 0.0, Guidance End: 0.75, Pixel Perfect: False, Control Mode: \
             My prompt is more important\""
        ),
        "{text}"
    );
    assert_eq!(InfoText::parse(&text), info);
}

/// The A1111 extension's control modes on the tiny SD1 pipeline: "My prompt is more important"
/// (soft injection) and "ControlNet is more important" (soft + conditional half only) each give
/// another image than "Balanced", and the balanced one is the diffusers golden's.
#[test]
fn control_modes_change_the_image() {
    let device = Device::Cpu;
    let sd1 = StableDiffusion::load(&fixtures().join("tiny-sd1"), &device, DType::F32).unwrap();
    let case = cases().into_iter().find(|c| c["name"] == "scale1").unwrap();
    let run = |mode: ControlMode| -> Vec<f32> {
        let mut p = params_for(&device, &case);
        p.controls[0].mode = mode;
        generate(&sd1, &p, &mut |_| {})
            .unwrap()
            .iter()
            .flat_map(|i| i.pixels.clone())
            .collect()
    };
    let balanced = run(ControlMode::Balanced);
    let (_, golden) = tensor("golden.safetensors", "scale1/image");
    assert!(max_err(&balanced, &golden) <= TOL);
    let prompt = run(ControlMode::Prompt);
    let control = run(ControlMode::ControlNet);
    for (name, img) in [("prompt", &prompt), ("controlnet", &control)] {
        let moved = max_err(img, &balanced);
        eprintln!("{name} vs balanced: max |diff| {moved}");
        assert!(moved > 20.0 * TOL, "{name} moves the image by only {moved}");
    }
    assert!(max_err(&prompt, &control) > 20.0 * TOL);
}
