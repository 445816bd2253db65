//! SDXL generations against diffusers' StableDiffusionXLPipeline / StableDiffusionXLImg2ImgPipeline /
//! StableDiffusionXLInpaintPipeline (4-channel UNet, latent blending; one case with an SDXL
//! textual-inversion file loaded into both encoders) on the tiny SDXL folder (tests/fixtures/tiny-sdxl; goldens from tools/make_sdxl_goldens.py: 4
//! steps, float32 on the CPU, torch.Generator("cpu") seeds), loaded through the public loader.
//!
//! Tolerances: images max |error| <= 1e-3 on [0, 1] before 8-bit quantisation (tests/tests/pipeline.rs's
//! bound), CPU backend and GPU under test in f32; prompt embeddings <= 1e-4 + 1e-4 |want|.

use std::path::{Path, PathBuf};

use kiln_kernels::testing::{assert_close, with_gpu};
use kiln_models::pipeline::{
    encode_pair, encode_prompt, generate, GenerationParams, StableDiffusion,
};
use kiln_models::single_file::{ModelKind, SingleFile};
use kiln_runtime::{DType, Device};
use kiln_tests::golden::{self, assert_images_match, max_err, read_f32};
use kiln_tests::model::load_err;
use kiln_tests::params::{case_init, pipeline_case_params};
use kiln_tests::temp::{self, copy_dir};
use kiln_tests::{fixtures, sdxl};
use safetensors::SafeTensors;
use serde_json::Value;

const TOL: f32 = 1e-3;

fn tiny() -> PathBuf {
    fixtures().join("tiny-sdxl")
}

fn load(device: &Device) -> StableDiffusion {
    StableDiffusion::load(&tiny(), device, DType::F32).unwrap()
}

fn tensor(file: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    read_f32(&tiny().join(file), name)
}

fn cases() -> Vec<Value> {
    golden::cases(&tiny().join("pipeline_cases.json"))
}

fn params_for(case: &Value) -> GenerationParams {
    let mut p = pipeline_case_params(case, &tiny());
    p.init = case_init(case, &fixtures().join("tiny-sd1"), "");
    p
}

fn check_all(device: &Device) {
    let model = load(device);
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let params = params_for(&case);
        let images = generate(&model, &params, &mut |_| {}).unwrap();
        let want = tensor("pipeline_golden.safetensors", &format!("{name}/image"));
        assert_images_match(device, name, &images, want, TOL);
    }
}

#[test]
fn sdxl_generations_match_diffusers_on_cpu() {
    check_all(&Device::Cpu);
}

#[test]
fn sdxl_generations_match_diffusers_on_gpu() {
    with_gpu(check_all);
}

#[test]
fn prompt_embeddings_match_diffusers_encode_prompt() {
    let model = load(&Device::Cpu);
    let file = "encode_prompt.safetensors";
    for (text, embeds, pooled) in [
        (
            "a red circle on a blue background",
            "prompt_embeds",
            "pooled",
        ),
        ("blurry, dark", "negative_prompt_embeds", "negative_pooled"),
    ] {
        let c = encode_prompt(&model, text, 1).unwrap();
        let (shape, want) = tensor(file, embeds);
        assert_eq!([c.chunks * 77, c.dim], [shape[1], shape[2]], "{embeds}");
        assert_close(embeds, &c.values, &want, 1e-4, 1e-4);
        assert_close(
            pooled,
            c.pooled.as_ref().unwrap(),
            &tensor(file, pooled).1,
            1e-4,
            1e-4,
        );
    }
    // An empty negative prompt is zeros, conditioning and pooled (A1111 and diffusers alike).
    let (cond, uncond) = encode_pair(&model, "a red circle", Some(""), 1, None).unwrap();
    let uncond = uncond.unwrap();
    assert_eq!((uncond.chunks, uncond.dim), (cond.chunks, 80));
    assert!(uncond.values.iter().all(|&v| v == 0.0));
    assert!(uncond.pooled.unwrap().iter().all(|&v| v == 0.0));
    // A long prompt: several 77-token chunks side by side, one pooled embedding (the first's).
    let long = vec!["red circle"; 50].join(", ");
    let many = encode_prompt(&model, &long, 1).unwrap();
    assert!(many.chunks >= 2, "{} chunks", many.chunks);
    assert_eq!(many.values.len(), many.chunks * 77 * 80);
    assert_eq!(many.pooled.as_ref().unwrap().len(), 40);
}

#[test]
fn sizes_and_dtypes_follow_the_configs() {
    let model = load(&Device::Cpu);
    // unet sample_size 32 x the tiny VAE's factor 2.
    assert_eq!(model.default_size(), 64);
    assert_eq!(model.context_dim(), 80);
    // 3 and 4 layers, SDXL's default already the penultimate: clip skip 1 ..= 2.
    assert_eq!(model.max_clip_skip(), 2);
    let mut params = GenerationParams::new("x");
    params.width = 32;
    params.height = 32;
    params.clip_skip = 3;
    let err = generate(&model, &params, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("between 1 and 2"), "{err}");
    with_gpu(|gpu| {
        if gpu.supports(DType::F16) {
            // force_upcast: the VAE stays f32 under an f16 UNet.
            let m = StableDiffusion::load(&tiny(), gpu, DType::F16).unwrap();
            assert_eq!(m.unet.dtype(), DType::F16);
            assert_eq!(m.vae.dtype(), DType::F32);
        }
    });
}

fn temp_copy(name: &str) -> PathBuf {
    let dir = temp::empty_dir(&format!("sdxl-{name}"));
    copy_dir(&tiny(), &dir);
    dir
}

fn edit_json(path: &Path, key: &str, value: Value) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn mismatched_sdxl_folders_name_the_fields() {
    let dir = temp_copy("cross");
    edit_json(
        &dir.join("unet/config.json"),
        "cross_attention_dim",
        64.into(),
    );
    let msg = load_err(&dir);
    assert!(
        msg.contains("cross_attention_dim 64")
            && msg.contains("hidden_size 32")
            && msg.contains("hidden_size 48")
            && msg.contains("= 80"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let dir = temp_copy("projection");
    edit_json(
        &dir.join("unet/config.json"),
        "projection_class_embeddings_input_dim",
        96.into(),
    );
    let msg = load_err(&dir);
    assert!(
        msg.contains("projection_class_embeddings_input_dim 96")
            && msg.contains("projection_dim 40")
            && msg.contains("addition_time_embed_dim 8 = 88"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // An SDXL UNet in a folder without the second encoder.
    let dir = temp_copy("no-te2");
    edit_json(
        &dir.join("model_index.json"),
        "_class_name",
        "StableDiffusionPipeline".into(),
    );
    std::fs::remove_dir_all(dir.join("text_encoder_2")).unwrap();
    let msg = load_err(&dir);
    assert!(msg.contains("text_encoder_2"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);

    // model_index.json says SDXL but tokenizer_2/ is missing.
    let dir = temp_copy("no-tok2");
    std::fs::remove_dir_all(dir.join("tokenizer_2")).unwrap();
    let msg = load_err(&dir);
    assert!(msg.contains("tokenizer_2/ folder"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_plan_counts_the_second_text_encoder() {
    use kiln_models::pipeline::{plan, LoadOptions};
    let mut params = GenerationParams::new("a red circle");
    params.width = 32;
    params.height = 32;
    params.steps = 2;
    let p = plan(&tiny(), &Device::Cpu, &LoadOptions::default(), &params).unwrap();
    let bytes = |name: &str| {
        p.weights
            .iter()
            .find(|w| w.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", p.weights))
            .bytes
    };
    // Every tensor of text_encoder_2/model.safetensors is f32 and loaded (the token embedding in
    // host memory, which on the CPU backend is device memory too).
    let file = std::fs::read(tiny().join("text_encoder_2/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&file).unwrap();
    let want: u64 = st
        .tensors()
        .iter()
        .map(|(_, t)| t.data().len() as u64)
        .sum();
    assert_eq!(bytes("text encoder 2"), want);
    assert!(bytes("text encoder") > 0 && bytes("unet") > 0 && bytes("vae") > 0);
    assert!(p.report().contains("text encoder 2"));
}

#[test]
fn an_sdxl_single_file_generates_the_folders_image() {
    // tests/fixtures/single-file/tiny-sdxl.safetensors holds tiny-sdxl's UNet, VAE, CLIP-L and bigG
    // in the original layout (conditioner.embedders.0 / 1, label_emb). The configs, the tiny
    // vocabulary and the scheduler come from the folder, as in pipeline.rs's SD 1.x single-file test
    // (a real checkpoint gets SDXL's published ones and kiln's built-in vocabulary).
    let path = fixtures().join("single-file/tiny-sdxl.safetensors");
    let file = SingleFile::open(&path).unwrap();
    assert_eq!(file.kind(), ModelKind::SdxlBase);
    let dev = Device::Cpu;
    let model = sdxl::from_single_file(&file, &path, "tiny-sdxl", &load(&dev), &dev);
    let case = cases()
        .into_iter()
        .find(|c| c["name"] == "txt2img_euler")
        .unwrap();
    let images = generate(&model, &params_for(&case), &mut |_| {}).unwrap();
    let (_, want) = tensor("pipeline_golden.safetensors", "txt2img_euler/image");
    let err = max_err(&images[0].pixels, &want);
    assert!(err <= TOL, "single file: max |err| {err}");

    // The public loader gets as far as the inferred configs, which the tiny weights do not fit
    // (their GroupNorm group counts): a clear error, not a panic.
    let msg = match StableDiffusion::load(&path, &dev, DType::F32) {
        Ok(_) => panic!("the tiny file loaded with inferred configs"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("tiny-sdxl.safetensors"), "{msg}");
}
