//! Complete generations against diffusers (fixture from tools/make_pipeline_fixtures.py: the tiny
//! SD1-architecture pipeline in tests/fixtures/tiny-sd1, 4 steps at 32x32, seeds fed to
//! torch.Generator("cpu"), float32 on the CPU; inpainting also with tests/fixtures/tiny-sd1-inpaint's
//! 9-channel UNet; SD 2.x-style cases with tests/fixtures/tiny-sd2's UNet and text encoder, "!"
//! padding and v-prediction).
//!
//! Tolerance: max |error| <= 1e-3 on the [0, 1] image before 8-bit quantisation, for f32 on the
//! CPU backend and on the GPU under test. (Both sides run float32 with different operation orders;
//! the errors of text encoder, 4 UNet evaluations, the scheduler and the VAE decode add up to about
//! 1e-5 here.) Also: the PNG `parameters` chunk round trip with A1111's regular expression,
//! bit-identical repeats, batch/seed consistency, and loader errors.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_kernels::testing::with_gpu;
use kiln_models::clip::tokenizer::ClipTokenizer;
use kiln_models::clip::{ClipTextConfig, ClipTextModel};
use kiln_models::embeddings::EmbeddingDb;
use kiln_models::image::infotext::{InfoText, PNG_KEYWORD};
use kiln_models::image::png::{decode_png, encode_png};
use kiln_models::image::RgbImage;
use kiln_models::pipeline::{
    encode_prompt, generate, infotext, single_file_scheduler, GenerationParams, ModelSource,
    PipelineError, StableDiffusion,
};
use kiln_models::rng::RngKind;
use kiln_models::schedulers::{PredictionType, SamplerSpec, SchedulerConfig};
use kiln_models::single_file::{ModelKind, SingleFile};
use kiln_models::unet::Unet;
use kiln_models::vae::{AutoencoderKL, VaeConfig};
use kiln_nn::weights::Weights;
use kiln_runtime::loader::{write_safetensors, WeightFile};
use kiln_runtime::{DType, Device};
use kiln_tests::fixtures;
use kiln_tests::golden::{self, assert_images_match, max_err, read_f32};
use kiln_tests::model::load_err;
use kiln_tests::params::{case_init, pipeline_case_params};
use kiln_tests::temp::{self, copy_dir};
use regex::Regex;
use safetensors::SafeTensors;
use serde_json::Value;

const TOL: f32 = 1e-3;

fn tiny() -> PathBuf {
    fixtures().join("tiny-sd1")
}

/// The tiny SD1 pipeline folder, or a model assembled from parts: the text encoder, tokenizer and
/// scheduler of `family`, the UNet of fixture folder `unet`, tiny-sd1's VAE.
fn load(device: &Device, family: &str, unet: &str) -> StableDiffusion {
    if family == "tiny-sd1" && unet == "tiny-sd1" {
        return StableDiffusion::load(&tiny(), device, DType::F32).unwrap();
    }
    let dir = fixtures().join(family);
    let weights =
        |file: PathBuf| Weights::new(vec![WeightFile::open(file).unwrap()], device, DType::F32);
    let te_config = ClipTextConfig::from_file(dir.join("text_encoder/config.json")).unwrap();
    let text_encoder = ClipTextModel::new(
        &te_config,
        &weights(dir.join("text_encoder/model.safetensors")),
    )
    .unwrap();
    let vae_config = VaeConfig::from_file(tiny().join("vae/config.json")).unwrap();
    let vae = AutoencoderKL::new(
        &vae_config,
        &weights(tiny().join("vae/diffusion_pytorch_model.safetensors")),
    )
    .unwrap();
    let unet_dir = fixtures().join(unet).join("unet");
    StableDiffusion::from_parts(
        Unet::load(&unet_dir, device, DType::F32).unwrap(),
        vae,
        text_encoder,
        ClipTokenizer::from_dir(&dir.join("tokenizer")).unwrap(),
        SchedulerConfig::from_file(&dir.join("scheduler/scheduler_config.json")).unwrap(),
        Some(16),
        ModelSource {
            name: unet.into(),
            hash_file: unet_dir.join("diffusion_pytorch_model.safetensors"),
            vae: None,
        },
    )
    .unwrap()
}

fn golden(name: &str) -> (Vec<usize>, Vec<f32>) {
    read_f32(&tiny().join("pipeline_golden.safetensors"), name)
}

fn cases() -> Vec<Value> {
    golden::cases(&tiny().join("pipeline_cases.json"))
}

fn params_for(case: &Value) -> GenerationParams {
    let mut p = pipeline_case_params(case, &tiny());
    // Cases at another size have their own init image and mask at that size ("_WxH").
    p.init = case_init(case, &tiny(), case["images"].as_str().unwrap());
    p
}

fn check_all(device: &Device) {
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let model = load(
            device,
            case["family"].as_str().unwrap(),
            case["unet"].as_str().unwrap(),
        );
        let params = params_for(&case);
        let mut reported = Vec::new();
        let images = generate(&model, &params, &mut |p| reported.push(p)).unwrap();
        assert_images_match(device, name, &images, golden(&format!("{name}/image")), TOL);
        // One report per whole step (Heun's two evaluations count once), ending at the total.
        let p = reported.last().expect("progress was reported");
        let steps: Vec<usize> = reported.iter().map(|p| p.step).collect();
        assert_eq!(steps, (1..=p.total).collect::<Vec<_>>(), "{name}: progress");
        for (i, img) in images.iter().enumerate() {
            assert_eq!(
                img.seed,
                params.seed + i as u64,
                "{name}: seed of image {i}"
            );
            assert_eq!((img.width, img.height), (params.width, params.height));
        }
    }
}

#[test]
fn complete_generations_match_diffusers_on_cpu() {
    check_all(&Device::Cpu);
}

#[test]
fn complete_generations_match_diffusers_on_gpu() {
    with_gpu(check_all);
}

/// A1111's `re_param` exactly as its infotext reader uses it.
const A1111_RE_PARAM: &str = r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#;

#[test]
fn png_parameters_round_trip_through_a1111s_parser() {
    let model = load(&Device::Cpu, "tiny-sd1", "tiny-sd1");
    let mut params =
        GenerationParams::new("a (red:1.2) circle, on a blue background\nline two: done");
    params.negative_prompt = "blurry, \"dark\"".into();
    params.width = 32;
    params.height = 32;
    params.steps = 2;
    params.seed = 4_000_000_000;
    params.sampler = SamplerSpec::parse("DPM++ 2M Karras").unwrap();
    params.clip_skip = 2;
    let images = generate(&model, &params, &mut |_| {}).unwrap();
    let info = infotext(
        &params,
        images[0].seed,
        "tiny, model: v1",
        Some("0123456789"),
    );
    let png = encode_png(&images[0].to_rgb8(), &[(PNG_KEYWORD, &info.format())]).unwrap();

    let decoded = decode_png(&png).unwrap();
    assert_eq!(decoded.image, images[0].to_rgb8());
    let text = decoded.text(PNG_KEYWORD).expect("a parameters chunk");
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 4000000000, Size: 32x32, Model hash: 0123456789, Model: \"tiny, model: v1\""), "{last}");
    // Parse the parameters line with A1111's own pattern and unquote as it does (json.loads).
    let re = Regex::new(A1111_RE_PARAM).unwrap();
    let fields: Vec<(String, String)> = re
        .captures_iter(last)
        .map(|c| {
            let v = c[2].to_string();
            let v = if v.starts_with('"') && v.ends_with('"') {
                serde_json::from_str(&v).unwrap()
            } else {
                v
            };
            (c[1].to_string(), v)
        })
        .collect();
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    assert_eq!(get("Steps"), Some("2"));
    assert_eq!(get("Sampler"), Some("DPM++ 2M"));
    assert_eq!(get("Schedule type"), Some("Karras"));
    assert_eq!(get("CFG scale"), Some("7"));
    assert_eq!(get("Seed"), Some("4000000000"));
    assert_eq!(get("Size"), Some("32x32"));
    assert_eq!(get("Model hash"), Some("0123456789"));
    assert_eq!(get("Model"), Some("tiny, model: v1"));
    assert_eq!(get("Clip skip"), Some("2"));
    assert_eq!(get("RNG"), Some("CPU"));
    // The whole infotext parses back to what was written.
    let parsed = InfoText::parse(text);
    assert_eq!(parsed, info);
    assert_eq!(parsed.prompt, params.prompt);
    assert_eq!(parsed.negative_prompt, params.negative_prompt);
}

#[test]
fn non_latin1_prompts_go_in_an_itxt_chunk() {
    let img = RgbImage::new(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
    let text = "猫, café 🐈\nSteps: 1, Sampler: Euler, Seed: 1";
    let png = encode_png(&img, &[(PNG_KEYWORD, text)]).unwrap();
    assert!(png.windows(4).any(|w| w == b"iTXt"));
    let decoded = decode_png(&png).unwrap();
    assert_eq!(decoded.text(PNG_KEYWORD), Some(text));
    assert_eq!(decoded.image, img);
}

fn png_bytes(model: &StableDiffusion, params: &GenerationParams) -> Vec<Vec<u8>> {
    generate(model, params, &mut |_| {})
        .unwrap()
        .iter()
        .map(|img| {
            let info = infotext(params, img.seed, "tiny", None).format();
            encode_png(&img.to_rgb8(), &[(PNG_KEYWORD, &info)]).unwrap()
        })
        .collect()
}

fn check_repeatable(device: &Device) {
    let model = load(device, "tiny-sd1", "tiny-sd1");
    let mut params = GenerationParams::new("a red circle on a blue background");
    params.width = 32;
    params.height = 32;
    params.steps = 3;
    params.seed = 99;
    params.sampler = SamplerSpec::parse("Euler a").unwrap();
    let a = png_bytes(&model, &params);
    let b = png_bytes(&model, &params);
    assert_eq!(a, b, "{}: same seed, same bytes", device.name());
    params.seed = 100;
    assert_ne!(png_bytes(&model, &params), a, "another seed, another image");
    params.seed = 99;
    params.rng = RngKind::Philox;
    assert_ne!(
        png_bytes(&model, &params),
        a,
        "another noise source, another image"
    );
}

#[test]
fn same_seed_gives_identical_png_bytes_on_cpu() {
    check_repeatable(&Device::Cpu);
}

#[test]
fn same_seed_gives_identical_png_bytes_on_gpu() {
    with_gpu(check_repeatable);
}

#[test]
fn batches_seed_each_image_on_its_own() {
    // Image i of a batch equals a single-image run with seed + i, also for Euler a, whose step
    // noise comes from each image's stream; and batch count continues the seeds.
    let model = load(&Device::Cpu, "tiny-sd1", "tiny-sd1");
    let mut params = GenerationParams::new("a red circle");
    params.width = 32;
    params.height = 32;
    params.steps = 3;
    params.seed = 500;
    params.sampler = SamplerSpec::parse("Euler a").unwrap();
    params.batch_size = 2;
    params.batch_count = 2;
    let batched = generate(&model, &params, &mut |_| {}).unwrap();
    assert_eq!(
        batched.iter().map(|i| i.seed).collect::<Vec<_>>(),
        vec![500, 501, 502, 503]
    );
    params.batch_size = 1;
    params.batch_count = 1;
    for img in &batched {
        params.seed = img.seed;
        let single = generate(&model, &params, &mut |_| {}).unwrap();
        let err = max_err(&single[0].pixels, &img.pixels);
        assert!(err <= 1e-5, "seed {}: batch vs single {err}", img.seed);
    }
}

#[test]
fn long_prompts_and_neutral_emphasis() {
    let model = load(&Device::Cpu, "tiny-sd1", "tiny-sd1");
    let plain = encode_prompt(&model, "a red circle on a blue background", 1).unwrap();
    let neutral = encode_prompt(&model, "a (red:1.0) circle on a blue background", 1).unwrap();
    assert_eq!(plain, neutral, "weight 1.0 changes nothing");
    let weighted = encode_prompt(&model, "a (red:1.5) circle on a blue background", 1).unwrap();
    assert_ne!(plain, weighted);
    assert_eq!(plain.chunks, 1);
    // More than 75 tokens: two chunks, and generation pads the negative prompt to match.
    let long = "a red circle on a blue background, ".repeat(8);
    let cond = encode_prompt(&model, &long, 1).unwrap();
    assert_eq!(cond.chunks, 2);
    assert_eq!(cond.values.len(), 2 * 77 * cond.dim);
    let mut params = GenerationParams::new(long);
    params.width = 32;
    params.height = 32;
    params.steps = 2;
    let images = generate(&model, &params, &mut |_| {}).unwrap();
    assert!(images[0].pixels.iter().all(|v| v.is_finite()));
}

fn temp_dir(name: &str) -> PathBuf {
    temp::empty_dir(&format!("pipeline-{name}"))
}

#[test]
fn bad_models_are_clear_errors() {
    let dir = temp_dir("bad-models");
    let ckpt = dir.join("model.ckpt");
    std::fs::write(&ckpt, b"not really a pickle").unwrap();
    let msg = load_err(&ckpt);
    assert!(
        msg.contains("pickle") && msg.contains("safetensors"),
        "{msg}"
    );

    let msg = load_err(&dir.join("nothing-here"));
    assert!(msg.contains("no such file"), "{msg}");

    let msg = load_err(&dir);
    assert!(msg.contains("model_index.json"), "{msg}");

    let model = dir.join("model");
    copy_dir(&tiny(), &model);
    std::fs::write(
        model.join("model_index.json"),
        r#"{"_class_name": "StableDiffusion3Pipeline"}"#,
    )
    .unwrap();
    let msg = load_err(&model);
    assert!(
        msg.contains("unknown model kind") && msg.contains("StableDiffusion3Pipeline"),
        "{msg}"
    );
    std::fs::copy(
        tiny().join("model_index.json"),
        model.join("model_index.json"),
    )
    .unwrap();

    // The fp16 variant name is found; a pickle-only component is refused; a missing one named.
    let vae = model.join("vae");
    std::fs::rename(
        vae.join("diffusion_pytorch_model.safetensors"),
        vae.join("diffusion_pytorch_model.fp16.safetensors"),
    )
    .unwrap();
    StableDiffusion::load(&model, &Device::Cpu, DType::F32).unwrap();
    std::fs::rename(
        vae.join("diffusion_pytorch_model.fp16.safetensors"),
        vae.join("diffusion_pytorch_model.bin"),
    )
    .unwrap();
    let msg = load_err(&model);
    assert!(
        msg.contains("pickle") && msg.contains("diffusion_pytorch_model.bin"),
        "{msg}"
    );
    std::fs::remove_file(vae.join("diffusion_pytorch_model.bin")).unwrap();
    let msg = load_err(&model);
    assert!(msg.contains("no weights") && msg.contains("vae"), "{msg}");
    std::fs::remove_dir_all(&vae).unwrap();
    let msg = load_err(&model);
    assert!(
        msg.contains("vae/ folder") && msg.contains("missing"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_shaped_tensor_is_named() {
    let dir = temp_dir("wrong-shape");
    let model = dir.join("model");
    copy_dir(&tiny(), &model);
    // Rewrite the text encoder's final LayerNorm weight with one value too many.
    let path = model.join("text_encoder/model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut name = String::new();
    let mut tensors = Vec::new();
    for (n, t) in st.tensors() {
        let (mut shape, mut data) = (t.shape().to_vec(), t.data().to_vec());
        if n.ends_with("final_layer_norm.weight") {
            name = n.clone();
            shape[0] += 1;
            data.extend_from_slice(&1f32.to_le_bytes());
        }
        tensors.push((n, t.dtype(), shape, data));
    }
    let refs: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    write_safetensors(&path, &refs).unwrap();
    let msg = load_err(&model);
    assert!(
        msg.contains(&name) && msg.contains("32") && msg.contains("33"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_requests_are_clear_errors() {
    let model = load(&Device::Cpu, "tiny-sd1", "tiny-sd1");
    let mut params = GenerationParams::new("x");
    params.width = 36;
    params.height = 32;
    let err = generate(&model, &params, &mut |_| {}).unwrap_err();
    assert!(matches!(err, PipelineError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("multiples of 8"), "{err}");

    let inpaint = load(&Device::Cpu, "tiny-sd1", "tiny-sd1-inpaint");
    let mut params = GenerationParams::new("x");
    params.width = 32;
    params.height = 32;
    let err = generate(&inpaint, &params, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("mask"), "{err}");
}

#[test]
fn textual_inversion_errors_name_the_embedding() {
    let model = load(&Device::Cpu, "tiny-sd1", "tiny-sd1");
    let db = EmbeddingDb::load_dir(&tiny().join("embeddings")).unwrap();
    assert_eq!(db.all().len(), 4);
    let mut params = GenerationParams::new("a kilnwide cat");
    params.width = 32;
    params.height = 32;
    params.steps = 1;
    params.embeddings = Some(Arc::new(db));
    // 24-wide vectors for a 32-wide text encoder: refused by name before any denoising.
    let err = generate(&model, &params, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kilnwide") && err.contains("24-wide") && err.contains("32 wide"),
        "{err}"
    );

    let missing = tiny().join("no-such-embeddings");
    let err = EmbeddingDb::load_dir(&missing).unwrap_err().to_string();
    assert!(err.contains("no-such-embeddings"), "{err}");

    // Pickles and unreadable files are listed as skipped, with the reason, not loaded.
    let dir = temp_dir("ti-skipped");
    std::fs::write(dir.join("old.pt"), b"PK pickle").unwrap();
    std::fs::write(dir.join("cut.safetensors"), b"\x10\x00").unwrap();
    let db = EmbeddingDb::load_dir(&dir).unwrap();
    assert!(db.is_empty());
    let reasons: Vec<String> = db
        .skipped
        .iter()
        .map(|(p, why)| format!("{}: {why}", p.display()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("old.pt") && r.contains("pickle")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("cut.safetensors")),
        "{reasons:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_single_file_checkpoint_generates_the_same_image() {
    // tests/fixtures/single-file/tiny-sd1.safetensors holds tiny-sd1's UNet, VAE and text encoder
    // in the original layout. The configs come from the folder (the weights cannot show the tiny
    // models' GroupNorm group counts), and so do the tiny vocabulary and the scheduler, which a real
    // checkpoint gets from kiln's built-in ones.
    let path = fixtures().join("single-file/tiny-sd1.safetensors");
    let file = SingleFile::open(&path).unwrap();
    let dev = Device::Cpu;
    let folder = load(&dev, "tiny-sd1", "tiny-sd1");
    let model = StableDiffusion::from_parts(
        file.load_unet(Some(folder.unet.config()), &dev, DType::F32)
            .unwrap(),
        file.load_vae(Some(folder.vae.config()), &dev, DType::F32)
            .unwrap(),
        file.load_text_encoder(
            folder.text_encoder.as_ref().map(|t| t.config()),
            &dev,
            DType::F32,
        )
        .unwrap(),
        folder.tokenizer.clone().unwrap(),
        folder.scheduler_config.clone(),
        folder.sample_size,
        ModelSource {
            name: "tiny-sd1".into(),
            hash_file: path.clone(),
            vae: None,
        },
    )
    .unwrap();
    let case = cases()
        .into_iter()
        .find(|c| c["name"] == "txt2img_euler")
        .unwrap();
    let images = generate(&model, &params_for(&case), &mut |_| {}).unwrap();
    let (_, want) = golden("txt2img_euler/image");
    let err = max_err(&images[0].pixels, &want);
    assert!(err <= TOL, "single file: max |err| {err}");

    // The public loader infers SD's configs, which the tiny weights do not fit: a clear error.
    let msg = load_err(&path);
    assert!(msg.contains("norm_num_groups"), "{msg}");
    // SD 1.x's scheduler for single files is SD 1.5's; SD 2.x (768) predicts v.
    let sd1 = single_file_scheduler(ModelKind::Sd1).unwrap();
    assert_eq!(sd1.prediction_type, Some(PredictionType::Epsilon));
    let sd2 = single_file_scheduler(ModelKind::Sd2).unwrap();
    assert_eq!(sd2.prediction_type, Some(PredictionType::VPrediction));
}
