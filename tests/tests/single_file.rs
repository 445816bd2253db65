//! Single-file checkpoints in the original SD layout (kiln_models::single_file).
//!
//! - Manifests of the real SD 1.5, SD 2.1 and SD-Turbo checkpoints (tools/make_manifests.py; names and
//!   shapes only): the UNet, VAE and CLIP builders, given the published configs, ask for exactly the
//!   tensors of the diffusers-layout manifest, at their shapes; through the single-file mapping, with
//!   configs inferred from the original-layout manifest, they use exactly its weights (everything but
//!   the schedule/EMA buffers and the OpenCLIP parts SD never runs), and the inferred configs equal the
//!   published ones. Models are built from zero tensors the allocator hands out untouched, so this
//!   costs address space, not memory.
//! - Tiny single files converted from the tiny diffusers fixtures (tools/make_single_file_fixtures.py,
//!   checked there with diffusers' own conversion): the UNet, VAE and text encoders loaded from them give
//!   the same outputs as from the diffusers-layout fixtures (max |diff| <= 1e-5; the weights are the same
//!   bits, so measured 0), and match the recorded diffusers/transformers goldens within those tests'
//!   tolerances.
//! - SDXL (tools/make_single_file_fixtures.py's tiny-sdxl.safetensors, checked there with diffusers'
//!   StableDiffusionXLPipeline.from_single_file; manifests of SDXL base 1.0 and the refiner): each
//!   component's diffusers-named view gives every tensor of the tiny-sdxl folder bit for bit (bigG's
//!   fused q/k/v sliced, its projection transposed) and uses every stored tensor; at the real sizes
//!   the inferred configs equal the published ones and every weight has its place.
//! - Bad input: pickles refused with conversion instructions, missing / unused / wrong-shaped tensors
//!   named, a file of other tensors named by what it holds, a truncated file named.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_kernels::testing::with_gpu;
use kiln_models::clip::{ClipTextConfig, ClipTextModel};
use kiln_models::pipeline::single_file_scheduler;
use kiln_models::schedulers::SchedulerConfig;
use kiln_models::single_file::{Component, ModelKind, SingleFile, TextEncoderKind};
use kiln_models::unet::{Unet, UnetConfig};
use kiln_models::vae::{AutoencoderKL, VaeConfig};
use kiln_nn::weights::{ShapeSource, Weights};
use kiln_runtime::loader::{write_safetensors, WeightFile};
use kiln_runtime::{DType, Device, Tensor};
use kiln_tests::{fixtures, temp};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Single file vs diffusers layout, both run by kiln: the same weights, so the same bits expected.
const SAME_WEIGHTS_TOL: f32 = 1e-5;

type Shapes = BTreeMap<String, Vec<usize>>;

fn single_file(name: &str) -> PathBuf {
    fixtures()
        .join("single-file")
        .join(format!("{name}.safetensors"))
}

fn manifest(name: &str) -> Value {
    let path = fixtures().join("manifests").join(format!("{name}.json.gz"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn shapes(tensors: &Value) -> Shapes {
    tensors
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, shape)| {
            let shape = shape
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (name.clone(), shape)
        })
        .collect()
}

/// Set differences both ways and shape mismatches, a few of each, for assertion messages.
fn compare(what: &str, got: &Shapes, want: &Shapes) {
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, s)| got.get(*k).is_some_and(|g| g != *s))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "{what}: not asked for {missing:?}; asked for but absent {extra:?}; other shape {wrong:?}"
    );
}

const MODELS: [(&str, ModelKind); 3] = [
    ("sd15", ModelKind::Sd1),
    ("sd21", ModelKind::Sd2),
    ("sd-turbo", ModelKind::Sd2),
];

fn dry_run<T>(tensors: &Value, build: impl FnOnce(&Weights) -> kiln_runtime::Result<T>) -> Shapes {
    let source = Arc::new(ShapeSource::new("manifest", shapes(tensors)));
    let weights = Weights::from_source(source.clone(), &Device::Cpu, DType::F32);
    drop(build(&weights).unwrap());
    source.loaded()
}

#[test]
fn builders_expect_exactly_the_diffusers_manifests() {
    for (model, _) in MODELS {
        let m = manifest(&format!("{model}-diffusers"));
        let c = &m["components"];
        let unet = UnetConfig::from_json(&c["unet"]["config"].to_string()).unwrap();
        let got = dry_run(&c["unet"]["tensors"], |w| Unet::new(&unet, w));
        compare(
            &format!("{model} unet"),
            &got,
            &shapes(&c["unet"]["tensors"]),
        );

        let vae = VaeConfig::from_json(&c["vae"]["config"].to_string(), model).unwrap();
        let got = dry_run(&c["vae"]["tensors"], |w| AutoencoderKL::new(&vae, w));
        compare(&format!("{model} vae"), &got, &shapes(&c["vae"]["tensors"]));

        let text = &c["text_encoder"];
        let clip = ClipTextConfig::from_json(&text["config"].to_string(), model).unwrap();
        let got = dry_run(&text["tensors"], |w| ClipTextModel::new(&clip, w));
        compare(
            &format!("{model} text_encoder"),
            &got,
            &shapes(&text["tensors"]),
        );
    }
}

/// `model`'s original-layout manifest as a shape-only single file: told apart as `kind`, then
/// `check(file, the published diffusers components)`; afterwards exactly the manifest's tensors
/// less its non-weight buffers and unused parts were asked for.
fn check_original_manifest(model: &str, kind: ModelKind, check: impl FnOnce(&SingleFile, &Value)) {
    let original = manifest(&format!("{model}-original"));
    let published = manifest(&format!("{model}-diffusers"));
    let source = Arc::new(ShapeSource::new(
        format!("{model}-original"),
        shapes(&original["tensors"]),
    ));
    let file = SingleFile::from_source(source.clone()).unwrap();
    assert_eq!(file.kind(), kind, "{model}");
    check(&file, &published["components"]);
    let mut want = shapes(&original["tensors"]);
    for extra in original["not_weights"].as_array().unwrap() {
        assert!(want.remove(extra.as_str().unwrap()).is_some(), "{extra}");
    }
    compare(&format!("{model} original layout"), &source.loaded(), &want);
}

#[test]
fn original_layout_maps_onto_exactly_the_original_manifests() {
    for (model, kind) in MODELS {
        check_original_manifest(model, kind, |file, c| {
            // Inferred configs = the published ones, in everything the builders use.
            let unet = file.unet_config().unwrap();
            let want = UnetConfig::from_json(&c["unet"]["config"].to_string()).unwrap();
            assert_eq!(
                unet.resolve().unwrap(),
                want.resolve().unwrap(),
                "{model} unet"
            );
            assert_eq!(
                (
                    unet.in_channels,
                    unet.out_channels,
                    unet.use_linear_projection
                ),
                (
                    want.in_channels,
                    want.out_channels,
                    want.use_linear_projection
                ),
                "{model} unet"
            );
            let vae = file.vae_config().unwrap();
            let want = VaeConfig::from_json(&c["vae"]["config"].to_string(), model).unwrap();
            assert_eq!(vae, want, "{model} vae");
            let clip = file.text_encoder_config().unwrap();
            let want =
                ClipTextConfig::from_json(&c["text_encoder"]["config"].to_string(), model).unwrap();
            assert_eq!(clip, want, "{model} text encoder");

            // Building every component uses every weight (a tensor left over would be an error) ...
            drop(file.load_unet(None, &Device::Cpu, DType::F32).unwrap());
            drop(file.load_vae(None, &Device::Cpu, DType::F32).unwrap());
            drop(
                file.load_text_encoder(None, &Device::Cpu, DType::F32)
                    .unwrap(),
            );
            // ... and nothing else, which check_original_manifest checks after.
        });
    }
}

#[test]
fn prediction_type_and_size_default_per_kind_as_in_diffusers() {
    let file = |model: &str| {
        let m = manifest(&format!("{model}-original"));
        SingleFile::from_source(Arc::new(ShapeSource::new(model, shapes(&m["tensors"])))).unwrap()
    };
    let sd15 = file("sd15");
    assert_eq!(
        (sd15.kind().prediction_type(), sd15.kind().image_size()),
        ("epsilon", 512)
    );
    assert_eq!(
        sd15.text_encoder_kind(),
        Some(TextEncoderKind::Clip(
            "cond_stage_model.transformer.text_model."
        ))
    );
    // SD-Turbo is epsilon, but like SD 2.x-base it cannot be told from SD 2.1-v by its weights:
    // diffusers' single-file loader, and kiln's default, take v_prediction for every "v2" file.
    for model in ["sd21", "sd-turbo"] {
        let f = file(model);
        assert_eq!(f.kind().diffusers_name(), "v2");
        assert_eq!(
            (f.kind().prediction_type(), f.kind().image_size()),
            ("v_prediction", 768)
        );
        assert_eq!(f.text_encoder_kind(), Some(TextEncoderKind::OpenClip));
    }
}

#[test]
fn a_nine_channel_unet_is_inpainting() {
    let m = manifest("sd21-original");
    let mut tensors = shapes(&m["tensors"]);
    tensors.insert(
        "model.diffusion_model.input_blocks.0.0.weight".into(),
        vec![320, 9, 3, 3],
    );
    let file = SingleFile::from_source(Arc::new(ShapeSource::new("inpaint", tensors))).unwrap();
    assert_eq!(file.kind(), ModelKind::Sd2Inpainting);
    assert_eq!(file.kind().prediction_type(), "epsilon");
    assert_eq!(file.unet_config().unwrap().in_channels, 9);
}

// ---- tiny single files against the tiny diffusers fixtures ----

fn golden(path: &Path, device: &Device) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            let tensor = match t.dtype() {
                Dtype::F32 => Tensor::from_bytes(device, t.shape(), DType::F32, t.data()).unwrap(),
                Dtype::I64 => {
                    let ids: Vec<u32> = t
                        .data()
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
                        .collect();
                    Tensor::from_u32(device, t.shape(), &ids).unwrap()
                }
                other => panic!("{name}: {other:?}"),
            };
            (name, tensor)
        })
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    a.iter()
        .zip(&b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Single-file output vs diffusers-layout output (both kiln) and vs the recorded golden.
fn check(what: &str, single: &Tensor, folder: &Tensor, golden: &Tensor, golden_tol: f32) {
    let same = max_diff(single, folder);
    let vs_golden = max_diff(single, golden);
    eprintln!("{what}: single file vs folder {same:e}, vs golden {vs_golden:e}");
    assert!(
        same <= SAME_WEIGHTS_TOL,
        "{what}: single file vs folder {same}"
    );
    assert!(vs_golden <= golden_tol, "{what}: vs golden {vs_golden}");
}

fn check_unet(variant: &str, file: &SingleFile, device: &Device) {
    let dir = fixtures().join(variant).join("unet");
    let cfg = UnetConfig::from_file(dir.join("config.json")).unwrap();
    let single = file.load_unet(Some(&cfg), device, DType::F32).unwrap();
    let folder = Unet::load(&dir, device, DType::F32).unwrap();
    let g = golden(&dir.join("golden.safetensors"), device);
    let (x, t, ctx) = (&g["sample"], &g["timesteps"], &g["encoder_hidden_states"]);
    let out = single.forward(x, t, ctx).unwrap();
    // unet.rs's tolerance: 2e-5 x the output scale (~1.5).
    let tol = 2e-5
        * g["out"]
            .to_vec_f32()
            .unwrap()
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()));
    let what = format!("{variant} unet on {}", device.name());
    check(
        &what,
        &out,
        &folder.forward(x, t, ctx).unwrap(),
        &g["out"],
        tol,
    );
}

fn check_text(variant: &str, file: &SingleFile, device: &Device) {
    let dir = fixtures().join(variant).join("text_encoder");
    let cfg = ClipTextConfig::from_file(dir.join("config.json")).unwrap();
    let single = file
        .load_text_encoder(Some(&cfg), device, DType::F32)
        .unwrap();
    let weights = WeightFile::open(dir.join("model.safetensors")).unwrap();
    let folder =
        ClipTextModel::new(&cfg, &Weights::new(vec![weights], device, DType::F32)).unwrap();
    let g = golden(&dir.join("golden.safetensors"), device);
    let ids = &g["input_ids"];
    let what = format!("{variant} text encoder on {}", device.name());
    // clip.rs's tolerance: 1e-4 + 1e-4 |want| with |want| up to ~4.
    for (skip, want) in [(1, "last_hidden_state"), (2, "penultimate")] {
        let got = single.forward(ids, &[], skip).unwrap();
        let folder = folder.forward(ids, &[], skip).unwrap();
        check(
            &format!("{what}, clip skip {skip}"),
            &got,
            &folder,
            &g[want],
            5e-4,
        );
    }
}

#[test]
fn tiny_sd1_single_file_matches_the_diffusers_fixtures() {
    let file = SingleFile::open(single_file("tiny-sd1")).unwrap();
    assert_eq!(file.kind(), ModelKind::Sd1);
    check_unet("tiny-sd1", &file, &Device::Cpu);
    check_text("tiny-sd1", &file, &Device::Cpu);

    let dir = fixtures().join("tiny-sd1/vae");
    let cfg = VaeConfig::from_file(dir.join("config.json")).unwrap();
    let single = file.load_vae(Some(&cfg), &Device::Cpu, DType::F32).unwrap();
    let weights = WeightFile::open(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let folder =
        AutoencoderKL::new(&cfg, &Weights::new(vec![weights], &Device::Cpu, DType::F32)).unwrap();
    let g = golden(&dir.join("golden.safetensors"), &Device::Cpu);
    // vae.rs's tolerance: 1e-4 + 1e-4 |want|, outputs peak ~3-10.
    let (mean, folder_mean) = (
        single.encode(&g["image"]).unwrap().mean,
        folder.encode(&g["image"]).unwrap().mean,
    );
    check("tiny-sd1 vae encode", &mean, &folder_mean, &g["mean"], 1e-3);
    let decoded = single.decode(&g["latents"]).unwrap();
    let folder_decoded = folder.decode(&g["latents"]).unwrap();
    check(
        "tiny-sd1 vae decode",
        &decoded,
        &folder_decoded,
        &g["decoded"],
        1e-3,
    );
}

#[test]
fn tiny_sd2_single_file_matches_the_diffusers_fixtures() {
    let file = SingleFile::open(single_file("tiny-sd2")).unwrap();
    assert_eq!(file.text_encoder_kind(), Some(TextEncoderKind::OpenClip));
    check_unet("tiny-sd2", &file, &Device::Cpu);
    // OpenCLIP's fused q/k/v, split on load; its extra last resblock and projection left unused.
    check_text("tiny-sd2", &file, &Device::Cpu);
}

#[test]
fn tiny_single_files_match_on_the_gpu() {
    with_gpu(|gpu| {
        let sd2 = SingleFile::open(single_file("tiny-sd2")).unwrap();
        check_unet("tiny-sd2", &sd2, gpu);
        check_text("tiny-sd2", &sd2, gpu);
        let sd1 = SingleFile::open(single_file("tiny-sd1")).unwrap();
        check_text("tiny-sd1", &sd1, gpu);
    });
}

#[test]
fn an_f16_single_file_loads_its_slices_at_two_bytes_per_element() {
    // Most published single files are f16. The same tiny-sd2 file with every float stored as f16,
    // loaded as f32: q/k/v come out of the fused projection at the right offsets, so the outputs
    // differ from the f32 file's only by the weights' f16 rounding (measured 3.3e-3 here).
    let path = edited("tiny-sd2", "f16", |t| {
        for (_, dtype, _, bytes) in t.iter_mut().filter(|(_, d, ..)| *d == Dtype::F32) {
            *dtype = Dtype::F16;
            *bytes = bytes
                .chunks_exact(4)
                .flat_map(|b| {
                    half::f16::from_f32(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes()
                })
                .collect();
        }
    });
    let cfg =
        ClipTextConfig::from_file(fixtures().join("tiny-sd2/text_encoder/config.json")).unwrap();
    let ids = golden(
        &fixtures().join("tiny-sd2/text_encoder/golden.safetensors"),
        &Device::Cpu,
    )["input_ids"]
        .clone();
    let run = |file: &Path| {
        SingleFile::open(file)
            .unwrap()
            .load_text_encoder(Some(&cfg), &Device::Cpu, DType::F32)
            .unwrap()
            .forward(&ids, &[], 1)
            .unwrap()
    };
    let diff = max_diff(&run(&path), &run(&single_file("tiny-sd2")));
    eprintln!("tiny-sd2 text encoder, f16 vs f32 single file: {diff:e}");
    assert!(diff < 2e-2, "f16 vs f32 single file: {diff}");
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

/// UNet config fields the weights show.
const UNET_FIELDS: [&str; 10] = [
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "cross_attention_dim",
    "use_linear_projection",
    "conv_in_kernel",
    "conv_out_kernel",
];

/// VAE config fields the weights show.
const VAE_FIELDS: [&str; 10] = [
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "down_block_types",
    "up_block_types",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
];

/// `got[field] == config.json[field]` for each field.
fn fields_match(what: &str, got: &Value, config: &Path, fields: &[&str]) {
    let want: Value = serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    for field in fields {
        assert_eq!(got[field], want[field], "{what} {field}");
    }
}

#[test]
fn inferred_configs_of_the_tiny_files_match_the_fixtures_where_weights_tell() {
    let sd1 = SingleFile::open(single_file("tiny-sd1")).unwrap();
    let sd2 = SingleFile::open(single_file("tiny-sd2")).unwrap();
    for (variant, file) in [("tiny-sd1", &sd1), ("tiny-sd2", &sd2)] {
        let got = file.unet_config_json().unwrap();
        let config = fixtures().join(variant).join("unet/config.json");
        let what = format!("{variant} unet");
        fields_match(&what, &got, &config, &UNET_FIELDS);
        fields_match(&what, &got, &config, &["transformer_layers_per_block"]);
    }
    let got = sd1.vae_config_json().unwrap();
    let config = fixtures().join("tiny-sd1/vae/config.json");
    fields_match("tiny-sd1 vae", &got, &config, &VAE_FIELDS);
    // What the weights do not show comes from SD's real configs, which these tiny models do not
    // follow: the tiny UNet's 8 channels do not split into SD's 32 GroupNorm groups, and the text
    // encoder's 32-wide hidden states not into 64-wide heads. Both are refused, naming the reason.
    let e = sd1.unet_config().unwrap_err().to_string();
    assert!(
        e.contains("inferred UNet config") && e.contains("norm_num_groups = 32"),
        "{e}"
    );
    let e = sd1.text_encoder_config().unwrap_err().to_string();
    assert!(e.contains("width 32") && e.contains("64-wide heads"), "{e}");
}

// ---- bad input ----

fn temp_dir(name: &str) -> PathBuf {
    temp::dir(&format!("single-file-{name}"))
}

/// A copy of a tiny single file with `edit` applied to its (name, dtype, shape, bytes) list.
fn edited(
    source: &str,
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let bytes = std::fs::read(single_file(source)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let refs: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    let path = temp_dir(name).join("model.safetensors");
    write_safetensors(&path, &refs).unwrap();
    path
}

fn tiny_unet_config(variant: &str) -> UnetConfig {
    UnetConfig::from_file(fixtures().join(variant).join("unet/config.json")).unwrap()
}

#[test]
fn pickles_are_refused_with_conversion_instructions() {
    let dir = temp_dir("pickles");
    for (file, bytes) in [
        ("model.ckpt", &b"PK\x03\x04 anything"[..]),
        ("model.pt", &b"whatever"[..]),
        ("renamed.safetensors", &b"PK\x03\x04\x14\x00\x00\x00"[..]),
        // torch.save's legacy format: PROTO 2, then LONG1 with its magic number.
        (
            "legacy.safetensors",
            &b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8"[..],
        ),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, bytes).unwrap();
        let e = SingleFile::open(&path).err().expect(file).to_string();
        assert!(
            e.contains(file)
                && e.contains("pickle")
                && e.contains("safetensors")
                && e.contains("torch.load"),
            "{e}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_diffusers_component_file_is_not_a_single_file() {
    let path = fixtures().join("tiny-sd1/unet/diffusion_pytorch_model.safetensors");
    let e = SingleFile::open(&path).err().unwrap().to_string();
    assert!(
        e.contains("original layout") && e.contains("diffusers folder"),
        "{e}"
    );
}

#[test]
fn a_missing_tensor_is_named_in_both_layouts() {
    let victim = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight";
    let path = edited("tiny-sd1", "missing", |t| t.retain(|(n, ..)| n != victim));
    let file = SingleFile::open(&path).unwrap();
    let e = file
        .load_unet(
            Some(&tiny_unet_config("tiny-sd1")),
            &Device::Cpu,
            DType::F32,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(victim) && e.contains("down_blocks.0.resnets.0.conv1.weight"),
        "{e}"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn an_unused_tensor_is_named() {
    let odd =
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.lora_up.weight";
    let path = edited("tiny-sd1", "unused", |t| {
        t.push((odd.into(), Dtype::F32, vec![2], vec![0; 8]))
    });
    let file = SingleFile::open(&path).unwrap();
    let e = file
        .load_unet(
            Some(&tiny_unet_config("tiny-sd1")),
            &Device::Cpu,
            DType::F32,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(odd) && e.contains("not used") && e.contains("UNet"),
        "{e}"
    );
    // The other components are unaffected.
    let vae = VaeConfig::from_file(fixtures().join("tiny-sd1/vae/config.json")).unwrap();
    assert!(file.load_vae(Some(&vae), &Device::Cpu, DType::F32).is_ok());
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn a_wrong_shape_names_the_stored_and_the_diffusers_tensor() {
    // The VAE's mid-block q: a [32, 32, 1, 1] conv stored as [32, 32, 3, 3].
    let victim = "first_stage_model.decoder.mid.attn_1.q.weight";
    let vae = VaeConfig::from_file(fixtures().join("tiny-sd1/vae/config.json")).unwrap();
    let e = reshaped_err(
        "tiny-sd1",
        "shape-vae",
        (victim, &[32, 32, 1, 1], &[32, 32, 3, 3]),
        |file| file.load_vae(Some(&vae), &Device::Cpu, DType::F32),
    );
    assert!(
        e.contains("decoder.mid_block.attentions.0.to_q.weight")
            && e.contains(victim)
            && e.contains("[32, 32, 3, 3]")
            && e.contains("expected [32, 32]"),
        "{e}"
    );

    // OpenCLIP's fused projection with 93 rows instead of 96: each third is [31, 32], not [32, 32].
    let victim = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight";
    let cfg =
        ClipTextConfig::from_file(fixtures().join("tiny-sd2/text_encoder/config.json")).unwrap();
    let e = reshaped_err(
        "tiny-sd2",
        "shape-clip",
        (victim, &[96, 32], &[93, 32]),
        |file| file.load_text_encoder(Some(&cfg), &Device::Cpu, DType::F32),
    );
    assert!(
        e.contains("encoder.layers.1.self_attn.q_proj.weight")
            && e.contains(victim)
            && e.contains("[31, 32]")
            && e.contains("expected [32, 32]"),
        "{e}"
    );
}

/// The error `load` gives on a copy of single file `source` whose f32 tensor `victim`, stored as
/// `was`, is stored as `shape` instead.
fn reshaped_err<T, E: std::fmt::Display>(
    source: &str,
    name: &str,
    (victim, was, shape): (&str, &[usize], &[usize]),
    load: impl FnOnce(&SingleFile) -> Result<T, E>,
) -> String {
    let path = edited(source, name, |t| {
        let entry = t.iter_mut().find(|(n, ..)| n == victim).unwrap();
        assert_eq!(entry.2, was);
        entry.2 = shape.to_vec();
        entry.3.resize(shape.iter().product::<usize>() * 4, 0);
    });
    let e = load(&SingleFile::open(&path).unwrap()).err().unwrap();
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
    e.to_string()
}

#[test]
fn a_missing_component_is_reported() {
    let file = SingleFile::open(single_file("tiny-sd2")).unwrap();
    let e = file
        .load_vae(None, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("no VAE") && e.contains("first_stage_model."),
        "{e}"
    );
}

// ---- SDXL ----

const SDXL_MODELS: [(&str, ModelKind); 2] = [
    ("sdxl-base", ModelKind::SdxlBase),
    ("sdxl-refiner", ModelKind::SdxlRefiner),
];

/// The diffusers component that each SingleFile component is.
const SDXL_COMPONENTS: [(Component, &str); 4] = [
    (Component::Unet, "unet"),
    (Component::Vae, "vae"),
    (Component::TextEncoder, "text_encoder"),
    (Component::TextEncoder2, "text_encoder_2"),
];

/// Asks a component's view for every tensor of `want` (diffusers names) at its shape, so the view
/// must place each one and the single file's unused check must find nothing left over.
fn ask_for_all(w: &Weights, want: &Shapes) -> kiln_runtime::Result<()> {
    for (name, shape) in want {
        drop(w.get(name, shape)?);
    }
    Ok(())
}

#[test]
fn tiny_sdxl_views_give_every_diffusers_tensor_exactly() {
    let file = SingleFile::open(single_file("tiny-sdxl")).unwrap();
    assert_eq!(file.kind(), ModelKind::SdxlBase);
    assert_eq!(
        file.text_encoder_kind(),
        Some(TextEncoderKind::Clip(
            "conditioner.embedders.0.transformer.text_model."
        ))
    );
    assert_eq!(
        file.text_encoder_2_kind(),
        Some(TextEncoderKind::BigG("conditioner.embedders.1.model."))
    );
    for (component, folder) in SDXL_COMPONENTS {
        check_sdxl_view(&file, component, folder, &Device::Cpu);
    }
}

/// Every tensor of tiny-sdxl's `folder` through the single file's view of `component` on `device`.
fn check_sdxl_view(file: &SingleFile, component: Component, folder: &str, device: &Device) {
    let dir = fixtures().join("tiny-sdxl").join(folder);
    let stem = if folder.starts_with("text") {
        "model.safetensors"
    } else {
        "diffusion_pytorch_model.safetensors"
    };
    let want = golden(&dir.join(stem), &Device::Cpu);
    let mut compared = 0;
    {
        file.load_component(component, device, DType::F32, |w| {
            for (name, tensor) in &want {
                let got = w.get(name, tensor.shape())?;
                // The same f32 bits, renamed, sliced (bigG's fused q/k/v) or transposed (its
                // projection): nothing is computed, so equal exactly.
                assert_eq!(
                    got.to_vec_f32()?,
                    tensor.to_vec_f32()?,
                    "tiny-sdxl {folder} {name}"
                );
                compared += 1;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("tiny-sdxl {folder}: {e}"));
        assert_eq!(compared, want.len());
        eprintln!(
            "tiny-sdxl {folder} on {}: {compared} tensors equal",
            device.name()
        );
    }
}

#[test]
fn tiny_sdxl_big_g_view_loads_on_the_gpu() {
    // The transposed projection and the q/k/v thirds, uploaded.
    with_gpu(|gpu| {
        let file = SingleFile::open(single_file("tiny-sdxl")).unwrap();
        check_sdxl_view(&file, Component::TextEncoder2, "text_encoder_2", gpu);
    });
}

#[test]
fn tiny_sdxl_inferred_configs_match_the_fixture_where_weights_tell() {
    let file = SingleFile::open(single_file("tiny-sdxl")).unwrap();
    let got = file.unet_config_json().unwrap();
    let config = fixtures().join("tiny-sdxl/unet/config.json");
    fields_match("tiny-sdxl unet", &got, &config, &UNET_FIELDS);
    let sdxl = [
        "mid_block_type",
        "addition_embed_type",
        "addition_embed_type_num_heads",
        "addition_time_embed_dim",
        "projection_class_embeddings_input_dim",
    ];
    fields_match("tiny-sdxl unet", &got, &config, &sdxl);
    // The depth of the one attention level (block 0 has no transformers, so its entry in the
    // fixture's [1, 2] is arbitrary); the 16/32 channels' head counts are not SDXL's 64-wide.
    assert_eq!(got["transformer_layers_per_block"], 2);
    let got = file.vae_config_json().unwrap();
    let config = fixtures().join("tiny-sdxl/vae/config.json");
    fields_match("tiny-sdxl vae", &got, &config, &VAE_FIELDS);
    fields_match(
        "tiny-sdxl vae",
        &got,
        &config,
        &["scaling_factor", "force_upcast"],
    );
    // SDXL's scheduler as stable-diffusion-xl-base-1.0 publishes it (the fixture's copy).
    assert_eq!(
        single_file_scheduler(ModelKind::SdxlBase).unwrap(),
        SchedulerConfig::from_file(&fixtures().join("tiny-sdxl/scheduler/scheduler_config.json"))
            .unwrap()
    );
}

/// Published config vs inferred, in every field the inference writes.
fn same_fields(what: &str, got: &Value, want: &Value) {
    for (field, value) in got.as_object().unwrap() {
        if field.starts_with('_') {
            continue;
        }
        // diffusers writes null for "not upcast" where kiln writes false.
        let want = match &want[field] {
            Value::Null if field == "upcast_attention" => Value::Bool(false),
            other => other.clone(),
        };
        assert_eq!(value, &want, "{what} {field}");
    }
}

#[test]
fn sdxl_manifests_infer_the_published_configs_and_use_every_weight() {
    for (model, kind) in SDXL_MODELS {
        check_original_manifest(model, kind, |file, c| {
            assert_eq!(
                (file.kind().prediction_type(), file.kind().image_size()),
                ("epsilon", 1024)
            );

            same_fields(
                &format!("{model} unet"),
                &file.unet_config_json().unwrap(),
                &c["unet"]["config"],
            );
            let vae = file.vae_config().unwrap();
            let want = VaeConfig::from_json(&c["vae"]["config"].to_string(), model).unwrap();
            assert_eq!(vae, want, "{model} vae");
            assert_eq!(vae.scaling_factor, 0.13025);
            for (component, name) in SDXL_COMPONENTS {
                let Some(text) = c.get(name).filter(|_| name.starts_with("text")) else {
                    continue;
                };
                let want = ClipTextConfig::from_json(&text["config"].to_string(), model).unwrap();
                let got = match component {
                    Component::TextEncoder => file.text_encoder_config_json(),
                    _ => file.text_encoder_2_config_json(),
                }
                .unwrap();
                let parsed = ClipTextConfig::from_json(&got.to_string(), model).unwrap();
                assert_eq!(parsed, want, "{model} {name}");
                assert_eq!(
                    got["projection_dim"], text["config"]["projection_dim"],
                    "{model} {name}"
                );
                assert_eq!(got["architectures"], text["config"]["architectures"]);
            }
            if kind == ModelKind::SdxlRefiner {
                assert!(!file.has(Component::TextEncoder));
            }

            // Every diffusers tensor of every component has its place at its shape, and nothing of the
            // file is left over but its non-weight buffers.
            for (component, name) in SDXL_COMPONENTS {
                let Some(part) = c.get(name) else { continue };
                let want = shapes(&part["tensors"]);
                file.load_component(component, &Device::Cpu, DType::F32, |w| {
                    ask_for_all(w, &want)
                })
                .unwrap_or_else(|e| panic!("{model} {name}: {e}"));
            }
        });
    }
}

#[test]
fn sdxl_unet_only_and_inpainting_files_are_told_apart() {
    let m = manifest("sdxl-base-original");
    let all = shapes(&m["tensors"]);
    let unet_only: Shapes = all
        .iter()
        .filter(|(n, _)| n.starts_with("model.diffusion_model."))
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    let file = SingleFile::from_source(Arc::new(ShapeSource::new("unet", unet_only))).unwrap();
    assert_eq!(file.kind(), ModelKind::SdxlBase);
    // Without bigG's projection the pooled width is SDXL's 1280: (2816 - 1280) / 6 = 256.
    assert_eq!(
        file.unet_config_json().unwrap()["addition_time_embed_dim"],
        256
    );
    assert!(file.text_encoder_kind().is_none() && file.text_encoder_2_kind().is_none());

    let mut inpaint = all;
    inpaint.insert(
        "model.diffusion_model.input_blocks.0.0.weight".into(),
        vec![320, 9, 3, 3],
    );
    let file = SingleFile::from_source(Arc::new(ShapeSource::new("inpaint", inpaint))).unwrap();
    assert_eq!(file.kind(), ModelKind::SdxlInpainting);
    assert_eq!(file.kind().diffusers_name(), "xl_inpaint");
    assert_eq!(file.unet_config_json().unwrap()["in_channels"], 9);
}

#[test]
fn a_file_of_other_tensors_names_what_it_holds() {
    let dir = temp_dir("other");
    let path = dir.join("model.safetensors");
    let zeros = vec![0u8; 16];
    write_safetensors(
        &path,
        &[
            (
                "transformer.blocks.0.attn.qkv.weight",
                Dtype::F32,
                vec![2, 2],
                zeros.clone(),
            ),
            (
                "transformer.blocks.1.attn.qkv.weight",
                Dtype::F32,
                vec![2, 2],
                zeros.clone(),
            ),
            ("vae.decoder.conv.weight", Dtype::F32, vec![4], zeros),
        ],
    )
    .unwrap();
    let e = SingleFile::open(&path).err().unwrap().to_string();
    assert!(
        e.contains("SDXL")
            && e.contains("`transformer.blocks.*` (2)")
            && e.contains("`vae.decoder.*` (1)")
            && e.contains("model.safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_truncated_file_names_the_file() {
    let dir = temp_dir("truncated");
    let path = dir.join("cut.safetensors");
    let bytes = std::fs::read(single_file("tiny-sdxl")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = SingleFile::open(&path).err().unwrap().to_string();
    assert!(e.contains("cut.safetensors"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}
