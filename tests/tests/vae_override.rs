//! `--vae FILE` (`LoadOptions::vae`): a VAE file in place of the model's own.
//!
//! - tiny-sd1's VAE written here (from the committed fixtures) in each layout VAE files come in:
//!   diffusers' names, the original names bare (how stabilityai/sdxl-vae and the vae-ft-mse files
//!   ship) and under a checkpoint's `first_stage_model.`. Same weights, so the same image as the
//!   built-in VAE, pixel for pixel (compared exactly).
//! - A VAE whose latent channels are not the UNet's is refused, naming the VAE file and the model.
//! - The infotext gets A1111's `VAE hash` and `VAE` fields right after `Model`.

use std::path::{Path, PathBuf};

use kiln_models::pipeline::{
    add_vae, infotext, GenerationParams, LoadOptions, PipelineError, StableDiffusion,
};
use kiln_runtime::loader::write_safetensors;
use kiln_runtime::Device;
use kiln_tests::model::run;
use kiln_tests::params::red_circle;
use kiln_tests::{fixtures, temp};
use safetensors::SafeTensors;

fn temp_dir(name: &str) -> PathBuf {
    temp::dir(&format!("vae-override-{name}"))
}

/// tiny-sd1's VAE from its single file, names rewritten by `rename` (None drops a tensor), with
/// `edit` applied to (name, shape, bytes).
fn vae_file(
    dir: &Path,
    name: &str,
    rename: impl Fn(&str) -> Option<String>,
    edit: impl Fn(&str, &mut Vec<usize>, &mut Vec<u8>),
) -> PathBuf {
    let bytes = std::fs::read(fixtures().join("single-file/tiny-sd1.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    for (stored, view) in st.tensors() {
        let Some(new) = stored.strip_prefix("first_stage_model.").and_then(&rename) else {
            continue;
        };
        let (mut shape, mut data) = (view.shape().to_vec(), view.data().to_vec());
        edit(&new, &mut shape, &mut data);
        tensors.push((new, view.dtype(), shape, data));
    }
    let refs: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    let path = dir.join(name);
    write_safetensors(&path, &refs).unwrap();
    path
}

fn params() -> GenerationParams {
    red_circle(32, 2, 7)
}

fn load(vae: Option<&Path>) -> Result<StableDiffusion, PipelineError> {
    let options = LoadOptions {
        vae: vae.map(Path::to_path_buf),
        ..LoadOptions::default()
    };
    StableDiffusion::load_with(&fixtures().join("tiny-sd1"), &Device::Cpu, &options)
}

fn pixels(model: &StableDiffusion) -> Vec<f32> {
    run(model, &params())
}

#[test]
fn a_vae_file_in_any_layout_gives_the_built_in_vaes_image() {
    let dir = temp_dir("layouts");
    let built_in = pixels(&load(None).unwrap());
    let keep = |_: &str, _: &mut Vec<usize>, _: &mut Vec<u8>| {};
    let files = [
        vae_file(&dir, "bare.safetensors", |n| Some(n.to_string()), keep),
        vae_file(
            &dir,
            "prefixed.safetensors",
            |n| Some(format!("first_stage_model.{n}")),
            keep,
        ),
        fixtures().join("tiny-sd1/vae/diffusion_pytorch_model.safetensors"),
    ];
    for file in &files {
        let model = load(Some(file)).unwrap();
        assert_eq!(model.source.vae.as_deref(), Some(file.as_path()));
        // The override keeps the model's latent scaling (the file has no config).
        assert_eq!(model.vae.config().scaling_factor, 0.18215);
        assert!(
            pixels(&model) == built_in,
            "{}: another image than the built-in VAE's",
            file.display()
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_vae_of_another_latent_width_is_refused_naming_both() {
    let dir = temp_dir("latents");
    // The decoder reads 8 latent channels instead of 4.
    let wide = vae_file(
        &dir,
        "wide-latents.safetensors",
        |n| Some(n.to_string()),
        |name, shape, data| {
            if name == "decoder.conv_in.weight" {
                shape[1] = 8;
                *data = vec![0; shape.iter().product::<usize>() * 4];
            }
        },
    );
    let e = load(Some(&wide)).err().unwrap().to_string();
    assert!(
        e.contains("wide-latents.safetensors")
            && e.contains("tiny-sd1")
            && e.contains("8 latent channels")
            && e.contains("works on 4"),
        "{e}"
    );
    // A file that is no VAE says what it holds.
    let unet = fixtures().join("tiny-sd1/unet/diffusion_pytorch_model.safetensors");
    let e = load(Some(&unet)).err().unwrap().to_string();
    assert!(e.contains("not an SD VAE") && e.contains("found"), "{e}");
    // Leftover tensors mean another architecture.
    let extra = vae_file(
        &dir,
        "extra.safetensors",
        |n| Some(n.replace("decoder.conv_out", "decoder.conv_extra")),
        |_, _, _| {},
    );
    assert!(load(Some(&extra)).is_err());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_infotext_names_the_vae_as_a1111_does() {
    let mut info = infotext(&params(), 7, "tiny-sd1", Some("0123456789"));
    add_vae(&mut info, "sdxl_vae.safetensors", Some("abcdef0123"));
    let text = info.format();
    assert!(
        text.contains(
            "Model hash: 0123456789, Model: tiny-sd1, VAE hash: abcdef0123, VAE: sdxl_vae.safetensors, "
        ),
        "{text}"
    );
    // And reads back as the same fields.
    let parsed = kiln_models::image::infotext::InfoText::parse(&text);
    assert_eq!(parsed.get("VAE"), Some("sdxl_vae.safetensors"));
    assert_eq!(parsed.get("VAE hash"), Some("abcdef0123"));
}
