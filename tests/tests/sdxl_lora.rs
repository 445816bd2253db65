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
use kiln_models::clip::ClipTextModelWithProjection;
use kiln_models::image::infotext::InfoText;
use kiln_models::lora::{apply, ActiveLora, LoraLibrary, Part};
use kiln_models::pipeline::{
    generate, infotext, GenerationParams, ModelSource, Sdxl, StableDiffusion,
};
use kiln_models::rng::RngKind;
use kiln_models::schedulers::SamplerSpec;
use kiln_models::single_file::{Component, SingleFile};
use kiln_runtime::loader::write_safetensors;
use kiln_runtime::{DType, Device};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const TOL: f32 = 1e-3;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn tiny() -> PathBuf {
    fixtures().join("tiny-sdxl")
}

fn loras() -> LoraLibrary {
    LoraLibrary::new(&tiny().join("loras")).unwrap()
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(tiny().join("lora_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn golden(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(tiny().join("lora_golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(&format!("{name}/image")).unwrap();
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn params(case: &Value) -> GenerationParams {
    let s = |k: &str| case[k].as_str().unwrap().to_string();
    let n = |k: &str| case[k].as_u64().unwrap() as usize;
    let mut p = GenerationParams::new(s("prompt"));
    p.negative_prompt = s("negative");
    p.steps = n("steps");
    p.cfg_scale = case["cfg"].as_f64().unwrap() as f32;
    p.width = n("width");
    p.height = n("height");
    p.seed = case["seed"].as_u64().unwrap();
    p.sampler = SamplerSpec::parse(&s("sampler")).unwrap();
    p.rng = RngKind::TorchCpu;
    p
}

/// The first case's settings with the plain prompts: diffusers' `none` image.
fn plain_params() -> GenerationParams {
    let f = fixture();
    GenerationParams {
        prompt: f["prompt"].as_str().unwrap().into(),
        negative_prompt: f["negative"].as_str().unwrap().into(),
        ..params(&f["cases"][0])
    }
}

fn max_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max)
}

fn run(model: &StableDiffusion, params: &GenerationParams) -> Vec<f32> {
    let images = generate(model, params, &mut |_| {}).unwrap();
    images.into_iter().flat_map(|i| i.pixels).collect()
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
    let library = loras();
    let none = golden("none");
    for case in fixture()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut p = params(case);
        p.loras = library.resolve(&p.prompt, &p.negative_prompt).unwrap();
        let got = run(&model, &p);
        let want = golden(name);
        let err = max_err(&got, &want);
        eprintln!("{} {name}: max |err| {err:e}", device.name());
        assert!(
            err <= TOL,
            "{} {name}: max |err| {err} > {TOL}",
            device.name()
        );
        assert!(
            max_err(&want, &none) > 100.0 * TOL,
            "{name}: the adapters change the image"
        );
        assert_eq!(active_layers(&model), 0, "{name}: cleared after");
        let err = max_err(&run(&model, &plain_params()), &none);
        assert!(
            err <= TOL,
            "{} after {name}, without adapters: {err}",
            device.name()
        );
    }
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
    let (w1, te02) = (golden("kohya_w1"), golden("kohya_te02_unet1"));
    assert!(max_err(&w1, &te02) > 10.0 * TOL);
    let model = StableDiffusion::load(&tiny(), &Device::Cpu, DType::F32).unwrap();
    let library = loras();
    let mut p = plain_params();
    p.prompt = format!("{} <lora:kohya:1:0>", p.prompt);
    p.loras = library.resolve(&p.prompt, "").unwrap();
    let te_only = run(&model, &p);
    assert!(max_err(&te_only, &golden("none")) > 10.0 * TOL);

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
    let x = folder.sdxl.as_ref().unwrap();
    let te2_config = x.text_encoder_2.config().clone();
    // As tests/tests/sdxl_pipeline.rs: the tiny file's configs come from the folder.
    let model = StableDiffusion {
        unet: file
            .load_unet(Some(folder.unet.config()), &dev, DType::F32)
            .unwrap(),
        vae: file
            .load_vae(Some(folder.vae.config()), &dev, DType::F32)
            .unwrap(),
        text_encoder: Some(
            file.load_text_encoder(
                folder.text_encoder.as_ref().map(|t| t.config()),
                &dev,
                DType::F32,
            )
            .unwrap(),
        ),
        tokenizer: folder.tokenizer.clone(),
        sdxl: Some(Sdxl {
            text_encoder_2: file
                .load_component(Component::TextEncoder2, &dev, DType::F32, |w| {
                    ClipTextModelWithProjection::new(&te2_config, w)
                })
                .unwrap(),
            tokenizer_2: x.tokenizer_2.clone(),
            requires_aesthetics_score: false,
        }),
        scheduler_config: folder.scheduler_config.clone(),
        sample_size: folder.sample_size,
        source: ModelSource {
            name: "tiny-sdxl".into(),
            hash_file: path.clone(),
            vae: None,
        },
        planned: None,
    }
    .checked()
    .unwrap();
    let library = loras();
    for name in ["kohya_w1", "peft_w1", "locon_w1"] {
        let case = fixture()["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone();
        let mut p = params(&case);
        p.loras = library.resolve(&p.prompt, &p.negative_prompt).unwrap();
        let err = max_err(&run(&model, &p), &golden(name));
        eprintln!("single file {name}: max |err| {err:e}");
        assert!(err <= TOL, "single file {name}: max |err| {err}");
    }
}

/// A1111's hash and `Lora hashes` field on an SDXL generation.
#[test]
fn sdxl_lora_hashes_and_infotext() {
    let library = loras();
    for (name, want) in fixture()["hashes"].as_object().unwrap() {
        assert_eq!(&library.get(name).unwrap().hash, want.as_str().unwrap());
    }
    let model = StableDiffusion::load(&tiny(), &Device::Cpu, DType::F32).unwrap();
    let mut p = plain_params();
    p.prompt = format!("{} <lora:kohya:0.5>", p.prompt);
    p.negative_prompt = "<lora:locon>".into();
    p.loras = library.resolve(&p.prompt, &p.negative_prompt).unwrap();
    generate(&model, &p, &mut |_| {}).unwrap();
    let text = infotext(&p, 1, &model.source.name, None).format();
    let hashes = fixture()["hashes"].clone();
    let short = |n: &str| hashes[n].as_str().unwrap()[..12].to_string();
    let want = format!("kohya: {}, locon: {}", short("kohya"), short("locon"));
    assert_eq!(
        InfoText::parse(&text).get("Lora hashes"),
        Some(want.as_str()),
        "{text}"
    );
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-sdxl-lora-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
