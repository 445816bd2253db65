//! LoRA adapters against diffusers (fixture from tools/make_lora_fixtures.py: random LoRAs for
//! the tiny SD1 pipeline in tests/fixtures/tiny-sd1/loras in PEFT, kohya and LoCon layouts, and
//! StableDiffusionPipeline's images after `load_lora_weights` + `set_adapters` at weights 0.5 and
//! 1, two at once and A1111's separate text-encoder / UNet weights; Euler, 4 steps, 32x32,
//! float32 on the CPU).
//!
//! Tolerance: max |error| <= 1e-3 on the [0, 1] image, as tests/tests/pipeline.rs (the adapters
//! add a few products per layer to the same float32 arithmetic). The adapters change the image
//! by 0.18 to 0.92 (max) from the one without them, so a LoRA applied wrongly or not at all fails.

use std::path::PathBuf;

use kiln_kernels::testing::with_gpu;
use kiln_models::image::infotext::InfoText;
use kiln_models::lora::{LoraFile, LoraLibrary};
use kiln_models::pipeline::{generate, infotext, GenerationParams, StableDiffusion};
use kiln_runtime::loader::write_safetensors;
use kiln_runtime::{DType, Device};
use kiln_tests::fixtures;
use kiln_tests::golden::checked_max_err;
use kiln_tests::lora::LoraFixture;
use kiln_tests::model::run;
use kiln_tests::params::case_params;
use kiln_tests::temp;
use regex::Regex;
use safetensors::Dtype;

const TOL: f32 = 1e-3;

fn tiny() -> PathBuf {
    fixtures().join("tiny-sd1")
}

const LORAS: LoraFixture = LoraFixture("tiny-sd1");

/// Every case on one loaded model, adapters changing per generation with no reload; then the
/// same model without adapters gives diffusers' plain image (they were all cleared).
fn check_all(device: &Device) {
    let model = StableDiffusion::load(&tiny(), device, DType::F32).unwrap();
    let none = LORAS.check_cases(device, &model, TOL, |name, _| {
        assert_eq!(
            model.unet.lora().active_layers(),
            0,
            "{name}: cleared after"
        );
        assert_eq!(
            model.text_encoder.as_ref().unwrap().lora().active_layers(),
            0
        );
    });
    let plain = case_params(&LORAS.json()["cases"][0]);
    let plain = GenerationParams {
        prompt: "a red circle on a blue background".into(),
        ..plain
    };
    let err = checked_max_err(&run(&model, &plain), &none);
    assert!(err <= TOL, "{}: without adapters: {err}", device.name());
}

#[test]
fn generations_with_loras_match_diffusers_on_cpu() {
    check_all(&Device::Cpu);
}

#[test]
fn generations_with_loras_match_diffusers_on_gpu() {
    with_gpu(check_all);
}

/// A1111's hash (SHA-256 after the header, as hashlib gives it in the fixture script) and the
/// `Lora hashes` field exactly as A1111's infotext reader reads it back.
#[test]
fn hashes_and_infotext() {
    let library = LORAS.library();
    for (name, want) in LORAS.json()["hashes"].as_object().unwrap() {
        assert_eq!(&library.get(name).unwrap().hash, want.as_str().unwrap());
    }
    let mut p = GenerationParams::new("x <lora:peft:0.5>");
    p.negative_prompt = "<lora:kohya:1> <lora:peft:1>".into();
    p.loras = library.resolve(&p.prompt, &p.negative_prompt).unwrap();
    assert_eq!(p.loras.len(), 3);
    let text = infotext(&p, 1, "m", None).format();
    let hashes = LORAS.json()["hashes"].clone();
    let short = |n: &str| hashes[n].as_str().unwrap()[..12].to_string();
    let want = format!("peft: {}, kohya: {}", short("peft"), short("kohya"));
    assert!(text.contains(&format!("Lora hashes: \"{want}\"")), "{text}");
    assert!(
        text.starts_with("x <lora:peft:0.5>\n"),
        "the prompt keeps its tags: {text}"
    );
    let re = Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#).unwrap();
    let last = text.lines().last().unwrap();
    let field = re
        .captures_iter(last)
        .find(|c| &c[1] == "Lora hashes")
        .unwrap();
    assert_eq!(&field[2], format!("\"{want}\""));
    assert_eq!(
        InfoText::parse(&text).get("Lora hashes"),
        Some(want.as_str())
    );
    let listed: Vec<String> = library.entries().into_iter().map(|e| e.name).collect();
    assert_eq!(listed, ["kohya", "locon", "peft"]);
}

fn temp_dir(tag: &str) -> PathBuf {
    temp::dir(&format!("lora-{tag}"))
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
        .collect()
}

/// Bad input fails with the name at fault and generates nothing: a name not in the folder, a
/// tag with no folder behind it, a malformed weight, unknown tensor names, a LoRA for another
/// architecture (another width; SDXL's `lora_te1_`).
#[test]
fn bad_loras_are_refused_by_name() {
    let model = StableDiffusion::load(&tiny(), &Device::Cpu, DType::F32).unwrap();
    let library = LORAS.library();
    let err = library
        .resolve("a <lora:nope:1>", "")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`nope`") && err.contains("kohya, locon, peft"),
        "{err}"
    );
    let err = library
        .resolve("a <lora:peft:x1>", "")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`<lora:peft:x1>`") && err.contains("`x1`"),
        "{err}"
    );

    let mut p = case_params(&LORAS.json()["cases"][0]);
    let err = generate(&model, &p, &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("LoRA `peft`") && err.contains("not loaded"),
        "{err}"
    );

    let dir = temp_dir("bad");
    let key = "lora_unet_down_blocks_0_resnets_0_conv1";
    let write = |file: &str, tensors: &[(&str, Vec<usize>)]| {
        let list: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s)| (*n, Dtype::F32, s.clone(), f32_bytes(s.iter().product())))
            .collect();
        let path = dir.join(file);
        write_safetensors(&path, &list).unwrap();
        path
    };
    let down = format!("{key}.lora_down.weight");
    let up = format!("{key}.lora_up.weight");
    let hada = format!("{key}.hada_w1_a");
    let path = write(
        "loha.safetensors",
        &[(&hada, vec![2, 8]), (&down, vec![2, 4, 3, 3])],
    );
    let err = LoraFile::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("loha.safetensors") && err.contains(&hada),
        "{err}"
    );

    // The tiny UNet's first resnet maps 8 channels to 8; a file for a 4-channel one does not fit.
    let wide = write(
        "wide.safetensors",
        &[(&down, vec![2, 4, 3, 3]), (&up, vec![8, 2, 1, 1])],
    );
    let te1 = write(
        "sdxl.safetensors",
        &[
            (
                "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
                vec![2, 32],
            ),
            (
                "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight",
                vec![37, 2],
            ),
        ],
    );
    for (path, says) in [(wide, "does not fit"), (te1, "lora_te1_")] {
        let library = LoraLibrary::new(&dir).unwrap();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        p.prompt = format!("a red circle <lora:{stem}>");
        p.loras = library.resolve(&p.prompt, "").unwrap();
        let err = generate(&model, &p, &mut |_| {}).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{stem}.safetensors")) && err.contains(says),
            "{err}"
        );
        assert_eq!(model.unet.lora().active_layers(), 0);
        assert_eq!(
            model.text_encoder.as_ref().unwrap().lora().active_layers(),
            0
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
