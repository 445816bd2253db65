//! `kiln generate --hr-scale / --hr-resize`: the hires fix end to end on the tiny fixture model
//! (output size, A1111's infotext fields), and its bad flags (clear error, no output file). The
//! images themselves are checked against diffusers in tests/tests/hires.rs.

use std::path::Path;
use std::process::Output;

use kiln_models::image::infotext::{InfoText, PNG_KEYWORD};
use kiln_models::image::png::decode_png;

mod common;
use common::{assert_ok, assert_refused, generate_on_cpu, temp_dir, tiny};

fn generate(dir: &Path, extra: &[&str]) -> Output {
    generate_on_cpu(&tiny())
        .args(["-p", "a red circle", "-W", "32", "-H", "32", "-s", "5"])
        .args(["--steps", "2", "-o"])
        .arg(dir.join("out.png"))
        .args(extra)
        .output()
        .unwrap()
}

fn info_of(path: &Path) -> (usize, usize, InfoText) {
    let png = decode_png(&std::fs::read(path).unwrap()).unwrap();
    let info = InfoText::parse(png.text(PNG_KEYWORD).unwrap());
    (png.image.width, png.image.height, info)
}

#[test]
fn hires_fix_writes_the_larger_image_with_a1111s_fields() {
    let dir = temp_dir("ok");
    let out = generate(&dir, &["--hr-scale", "1.5", "--hr-steps", "1"]);
    assert_ok(&out);
    let (w, h, info) = info_of(&dir.join("out.png"));
    assert_eq!((w, h), (48, 48));
    // A1111 keeps the first pass's size in `Size`.
    assert_eq!(info.get("Size"), Some("32x32"));
    assert_eq!(info.get("Denoising strength"), Some("0.7"));
    assert_eq!(info.get("Hires upscale"), Some("1.5"));
    assert_eq!(info.get("Hires steps"), Some("1"));
    assert_eq!(info.get("Hires upscaler"), Some("Latent"));

    let out = generate(
        &dir,
        &[
            "--hr-resize",
            "64x0",
            "--hr-upscaler",
            "nearest",
            "--hr-denoising",
            "0.5",
        ],
    );
    assert_ok(&out);
    let (w, h, info) = info_of(&dir.join("out.png"));
    assert_eq!((w, h), (64, 64));
    assert_eq!(info.get("Hires resize"), Some("64x0"));
    assert_eq!(info.get("Hires upscaler"), Some("Nearest"));
    assert_eq!(info.get("Denoising strength"), Some("0.5"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_upscaler_model_file_works_between_the_passes() {
    let dir = temp_dir("model");
    let model = tiny().join("../upscalers/srvgg_x4.safetensors");
    let out = generate(
        &dir,
        &[
            "--hr-scale",
            "2",
            "--hr-steps",
            "1",
            "--hr-upscaler",
            model.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    let (w, h, info) = info_of(&dir.join("out.png"));
    assert_eq!((w, h), (64, 64));
    assert_eq!(info.get("Hires upscaler"), Some("srvgg_x4"));
    // A file that is not an upscaler is refused before generating.
    let not_one = tiny().join("unet/diffusion_pytorch_model.safetensors");
    let _ = std::fs::remove_file(dir.join("out.png"));
    let out = generate(
        &dir,
        &[
            "--hr-scale",
            "2",
            "--hr-upscaler",
            not_one.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hr-upscaler"));
    assert!(!dir.join("out.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_hires_flags_are_clear_errors_with_no_output() {
    let dir = temp_dir("bad");
    let init = tiny().join("init.png");
    let init = init.to_str().unwrap();
    for (extra, expect) in [
        (vec!["--hr-scale", "-2"], "--hr-scale -2"),
        (vec!["--hr-scale", "2", "--hr-resize", "64x64"], "not both"),
        (vec!["--hr-resize", "64by64"], "WIDTHxHEIGHT"),
        (
            vec!["--hr-scale", "2", "--hr-upscaler", "4x-Magic"],
            "4x-Magic",
        ),
        (
            vec!["--hr-scale", "2", "--hr-denoising", "0"],
            "--hr-denoising 0",
        ),
        (vec!["--hr-scale", "2", "-i", init], "txt2img"),
    ] {
        let out = generate(&dir, &extra);
        assert_refused(&out, &format!("{extra:?}"), expect, &dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
