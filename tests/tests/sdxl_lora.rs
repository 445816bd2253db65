//! LoRA adapters on SDXL against diffusers (fixture from tools/make_sdxl_lora_fixtures.py: random
//! LoRAs for the tiny SDXL pipeline in tests/fixtures/tiny-sdxl/loras: kohya's SDXL keys with
//! `lora_te1_` / `lora_te2_` and the original UNet's `input_blocks` / `middle_block` /
//! `output_blocks` names, PEFT keys for unet / text_encoder / text_encoder_2, a LoCon file in
//! kohya's names; StableDiffusionXLPipeline's images after `load_lora_weights` + `set_adapters`
//! at weights 0.5 and 1, two at once and A1111's separate text-encoder / UNet weights; Euler, 4
//! steps, 32x32, float32 on the CPU).
//!
//! Tolerance: max |error| <= 1e-3 on the [0, 1] image, as tests/tests/lora.rs (SD 1.x). The
//! adapters change the image by 0.16 to 0.51 (max) from the one without them, so a LoRA applied
//! wrongly or not at all fails.

use std::path::{Path, PathBuf};

use kiln_kernels::testing::with_gpu;
use kiln_models::image::infotext::InfoText;
use kiln_models::lora::{apply, ActiveLora, LoraLibrary, Part};
use kiln_models::pipeline::{generate, infotext, GenerationParams, StableDiffusion};
use kiln_models::single_file::SingleFile;
use kiln_runtime::loader::write_safetensors;
use kiln_runtime::{DType, Device};
use kiln_tests::golden::checked_max_err;
use kiln_tests::lora::LoraFixture;
use kiln_tests::model::run;
use kiln_tests::params::case_params;
use kiln_tests::temp;
use kiln_tests::{fixtures, sdxl};
use safetensors::Dtype;

const TOL: f32 = 1e-3;

fn tiny() -> PathBuf {
    fixtures().join("tiny-sdxl")
}

const LORAS: LoraFixture = LoraFixture("tiny-sdxl");

/// The first case's settings with the plain prompts: diffusers' `none` image.
fn plain_params() -> GenerationParams {
    let f = LORAS.json();
    GenerationParams {
        prompt: f["prompt"].as_str().unwrap().into(),
        negative_prompt: f["negative"].as_str().unwrap().into(),
        ..case_params(&f["cases"][0])
    }
}

fn active_layers(model: &StableDiffusion) -> usize {
    let te2 = model.sdxl.as_ref().unwrap().text_encoder_2.text_model();
    model.unet.lora().active_layers()
        + model.text_encoder.as_ref().unwrap().lora().active_layers()
        + te2.lora().active_layers()
}

/// Every case on one loaded model, adapters changing per generation with no reload; after each,
/// the same model without adapters gives diffusers' plain image (they were all cleared).
fn check_all(device: &Device) {
    let model = StableDiffusion::load(&tiny(), device, DType::F32).unwrap();
    LORAS.check_cases(device, &model, TOL, |name, none| {
        assert_eq!(active_layers(&model), 0, "{name}: cleared after");
        let err = checked_max_err(&run(&model, &plain_params()), none);
        assert!(
            err <= TOL,
            "{} after {name}, without adapters: {err}",
            device.name()
        );
    });
}

#[test]
fn sdxl_generations_with_loras_match_diffusers_on_cpu() {
    check_all(&Device::Cpu);
}

#[test]
fn sdxl_generations_with_loras_match_diffusers_on_gpu() {
    with_gpu(check_all);
}

/// The text-encoder weight reaches both encoders: the kohya file at text-encoder weight 0.2 is
/// another image than at 1, its text-encoder adapters alone change the image, and every module of
/// each part lands on that part's layers (CLIP-L's, bigG's, the UNet's).
#[test]
fn both_text_encoders_take_the_adapters() {
    let (w1, te02) = (LORAS.golden("kohya_w1"), LORAS.golden("kohya_te02_unet1"));
    assert!(checked_max_err(&w1, &te02) > 10.0 * TOL);
    let model = StableDiffusion::load(&tiny(), &Device::Cpu, DType::F32).unwrap();
    let library = LORAS.library();
    let mut p = plain_params();
    p.prompt = format!("{} <lora:kohya:1:0>", p.prompt);
    p.loras = library.resolve(&p.prompt, "").unwrap();
    let te_only = run(&model, &p);
    assert!(checked_max_err(&te_only, &LORAS.golden("none")) > 10.0 * TOL);

    let te2 = model.sdxl.as_ref().unwrap().text_encoder_2.text_model();
    for stem in ["kohya", "peft"] {
        let file = library.get(stem).unwrap();
        let count = |part: Part| file.modules.iter().filter(|m| m.part == part).count();
        let active = ActiveLora {
            file: file.clone(),
            te_weight: 1.0,
            unet_weight: 1.0,
        };
        let applied = apply(&model.lora_targets(), &[active]).unwrap();
        assert_eq!(
            te2.lora().active_layers(),
            count(Part::TextEncoder2),
            "{stem}"
        );
        assert_eq!(
            model.text_encoder.as_ref().unwrap().lora().active_layers(),
            count(Part::TextEncoder),
            "{stem}"
        );
        assert_eq!(
            model.unet.lora().active_layers(),
            count(Part::Unet),
            "{stem}"
        );
        assert!(count(Part::TextEncoder2) > 0 && count(Part::TextEncoder) > 0);
        drop(applied);
        assert_eq!(active_layers(&model), 0);
    }
}

/// The tiny SDXL single file (original layout) takes the same LoRA and gives the folder's image.
#[test]
fn an_sdxl_single_file_takes_the_same_lora() {
    let path = fixtures().join("single-file/tiny-sdxl.safetensors");
    let file = SingleFile::open(&path).unwrap();
    let dev = Device::Cpu;
    let folder = StableDiffusion::load(&tiny(), &dev, DType::F32).unwrap();
    // As tests/tests/sdxl_pipeline.rs: the tiny file's configs come from the folder.
    let model = sdxl::from_single_file(&file, &path, "tiny-sdxl", &folder, &dev);
    let library = LORAS.library();
    for name in ["kohya_w1", "peft_w1", "locon_w1"] {
        let case = LORAS.json()["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone();
        let mut p = case_params(&case);
        p.loras = library.resolve(&p.prompt, &p.negative_prompt).unwrap();
        let err = checked_max_err(&run(&model, &p), &LORAS.golden(name));
        eprintln!("single file {name}: max |err| {err:e}");
        assert!(err <= TOL, "single file {name}: max |err| {err}");
    }
}

/// A1111's hash and `Lora hashes` field on an SDXL generation.
#[test]
fn sdxl_lora_hashes_and_infotext() {
    let library = LORAS.library();
    for (name, want) in LORAS.json()["hashes"].as_object().unwrap() {
        assert_eq!(&library.get(name).unwrap().hash, want.as_str().unwrap());
    }
    let model = StableDiffusion::load(&tiny(), &Device::Cpu, DType::F32).unwrap();
    let mut p = plain_params();
    p.prompt = format!("{} <lora:kohya:0.5>", p.prompt);
    p.negative_prompt = "<lora:locon>".into();
    p.loras = library.resolve(&p.prompt, &p.negative_prompt).unwrap();
    generate(&model, &p, &mut |_| {}).unwrap();
    let text = infotext(&p, 1, &model.source.name, None).format();
    let hashes = LORAS.json()["hashes"].clone();
    let short = |n: &str| hashes[n].as_str().unwrap()[..12].to_string();
    let want = format!("kohya: {}, locon: {}", short("kohya"), short("locon"));
    assert_eq!(
        InfoText::parse(&text).get("Lora hashes"),
        Some(want.as_str()),
        "{text}"
    );
}

fn temp_dir(tag: &str) -> PathBuf {
    temp::dir(&format!("sdxl-lora-{tag}"))
}

fn lora_error(model: &StableDiffusion, dir: &Path, stem: &str) -> String {
    let library = LoraLibrary::new(dir).unwrap();
    let mut p = plain_params();
    p.prompt = format!("a red circle <lora:{stem}>");
    p.loras = library.resolve(&p.prompt, "").unwrap();
    let err = generate(model, &p, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains(&format!("{stem}.safetensors")), "{err}");
    err
}

/// An SD 1.x LoRA on SDXL and an SDXL LoRA on SD 1.x are refused naming the file and both
/// architectures; a module that matches no layer is named; nothing is left set.
#[test]
fn loras_for_another_architecture_are_refused() {
    let sdxl = StableDiffusion::load(&tiny(), &Device::Cpu, DType::F32).unwrap();
    let sd1 =
        StableDiffusion::load(&fixtures().join("tiny-sd1"), &Device::Cpu, DType::F32).unwrap();
    // Files with cross-attention adapters say which width they were trained for; the LoCon
    // files (convolutions and proj_in only) fail on the first layer that does not fit.
    for stem in ["kohya", "peft", "locon"] {
        let err = lora_error(&sdxl, &fixtures().join("tiny-sd1/loras"), stem);
        let says = match stem {
            "locon" => "does not fit this SDXL model (tiny-sdxl)",
            _ => {
                "is a LoRA whose UNet's cross-attention reads 32-wide text, but this SDXL model \
                  (tiny-sdxl) reads 80-wide text"
            }
        };
        assert!(
            err.contains(says) && err.contains("another architecture"),
            "{err}"
        );
        assert_eq!(active_layers(&sdxl), 0);
    }
    for stem in ["kohya", "peft", "locon"] {
        let err = lora_error(&sd1, &tiny().join("loras"), stem);
        let says = match stem {
            "locon" => "does not fit this SD 1.x / 2.x model (tiny-sd1)",
            _ => {
                "is a LoRA whose UNet's cross-attention reads 80-wide text, but this SD 1.x / \
                  2.x model (tiny-sd1) reads 32-wide text"
            }
        };
        assert!(
            err.contains(says) && err.contains("another architecture"),
            "{err}"
        );
        assert_eq!(sd1.unet.lora().active_layers(), 0);
        assert_eq!(sd1.text_encoder.as_ref().unwrap().lora().active_layers(), 0);
    }

    // A module the tiny UNet lacks (it has two levels, input_blocks 0..=5), and one that exists.
    let dir = temp_dir("unknown");
    let f32_bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
            .collect()
    };
    let tensors = [
        (
            "lora_unet_input_blocks_7_1_proj_in.lora_down.weight",
            vec![2, 32],
        ),
        (
            "lora_unet_input_blocks_7_1_proj_in.lora_up.weight",
            vec![32, 2],
        ),
        (
            "lora_unet_input_blocks_4_1_proj_in.lora_down.weight",
            vec![2, 32],
        ),
        (
            "lora_unet_input_blocks_4_1_proj_in.lora_up.weight",
            vec![32, 2],
        ),
    ];
    let list: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s)| (*n, Dtype::F32, s.clone(), f32_bytes(s.iter().product())))
        .collect();
    write_safetensors(&dir.join("stray.safetensors"), &list).unwrap();
    let err = lora_error(&sdxl, &dir, "stray");
    assert!(
        err.contains("1 module(s) match no layer of this SDXL model")
            && err.contains("unet `input_blocks_7_1_proj_in`"),
        "{err}"
    );
    assert_eq!(active_layers(&sdxl), 0);
    std::fs::remove_dir_all(&dir).ok();
}
