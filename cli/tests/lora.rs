//! `kiln generate --lora FILE:WEIGHT` and `--lora-dir` with prompt tags on the tiny fixture model
//! and its LoRA fixtures (tools/make_lora_fixtures.py): the diffusers image at 8-bit, the
//! infotext's `Lora hashes`, and bad input (clear error, non-zero exit, no output file).

use std::path::Path;
use std::process::Output;

use kiln_models::image::infotext::{InfoText, PNG_KEYWORD};
use kiln_models::image::png::decode_png;
use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device};

mod common;
use common::{generate_on_cpu, stderr, temp_dir, tiny};

/// The fixtures' case settings on `model`: Euler, 4 steps, CFG `cfg`, seed 42, 32x32.
fn generate_case(model: &Path, cfg: &str, out: &Path, extra: &[&str]) -> Output {
    generate_on_cpu(model)
        .args([
            "--steps",
            "4",
            "--cfg-scale",
            cfg,
            "-s",
            "42",
            "-W",
            "32",
            "-H",
            "32",
        ])
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// The tiny SD 1.x fixture's case settings (CFG 7.5).
fn generate(dir: &Path, extra: &[&str]) -> Output {
    generate_case(&tiny(), "7.5", &dir.join("out.png"), extra)
}

/// `name/image` of `model`'s lora_golden.safetensors rounded to 8 bits as diffusers'
/// `numpy_to_pil` does.
fn golden_rgb8(model: &Path, name: &str) -> Vec<u8> {
    let file = WeightFile::open(model.join("lora_golden.safetensors")).unwrap();
    let t = file.load(&format!("{name}/image"), &Device::Cpu, Some(DType::F32));
    let values = t.unwrap().to_vec_f32().unwrap();
    values.iter().map(|v| (v * 255.0).round() as u8).collect()
}

/// The largest difference of two 8-bit images.
fn worst_diff(got: &[u8], want: &[u8]) -> u8 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| g.abs_diff(w))
        .max()
        .unwrap()
}

/// `--lora FILE:0.5` and `<lora:kohya:1>` in the negative prompt via `--lora-dir` together
/// (the fixture's `peft_kohya` case), within one 8-bit level of diffusers' image.
#[test]
fn lora_flags_and_tags_give_diffusers_image() {
    let dir = temp_dir("ok");
    let peft = tiny().join("loras/peft.safetensors");
    let out = generate(
        &dir,
        &[
            "-p",
            "a red circle on a blue background",
            "-n",
            "blurry <lora:kohya:1>",
            "--lora",
            &format!("{}:0.5", peft.display()),
            "--lora-dir",
            tiny().join("loras").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let png = decode_png(&std::fs::read(dir.join("out.png")).unwrap()).unwrap();
    let worst = worst_diff(&png.image.data, &golden_rgb8(&tiny(), "peft_kohya"));
    assert!(worst <= 1, "8-bit pixels differ by {worst}");
    let info = InfoText::parse(png.text(PNG_KEYWORD).unwrap());
    assert_eq!(info.negative_prompt, "blurry <lora:kohya:1>");
    let hashes = info.get("Lora hashes").unwrap();
    assert!(
        hashes.starts_with("peft: bc0cb7eac307, kohya: "),
        "{hashes}"
    );
}

#[test]
fn bad_lora_input_fails_before_writing() {
    let dir = temp_dir("bad");
    let loras = tiny().join("loras");
    let cases: [(Vec<String>, &str); 4] = [
        (
            vec!["-p".into(), "x <lora:peft:1>".into()],
            "give --lora-dir",
        ),
        (
            vec![
                "-p".into(),
                "x <lora:nope>".into(),
                "--lora-dir".into(),
                loras.display().to_string(),
            ],
            "LoRA `nope` is not in",
        ),
        (
            vec![
                "-p".into(),
                "x <lora:peft:big>".into(),
                "--lora-dir".into(),
                loras.display().to_string(),
            ],
            "`big` is not a number",
        ),
        (
            vec![
                "-p".into(),
                "x".into(),
                "--lora".into(),
                "missing.safetensors:0.5".into(),
            ],
            "missing.safetensors",
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = generate(&dir, &args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!dir.join("out.png").exists(), "{args:?}: no output");
    }
}

/// SDXL from the command line: kohya's SDXL file through `--lora-dir` gives diffusers' image
/// (tiny-sdxl's `kohya_w1` case, tools/make_sdxl_lora_fixtures.py) within one 8-bit level; an
/// SD 1.x LoRA on it fails naming the file and the model, with no output file.
#[test]
fn sdxl_loras_from_the_command_line() {
    let sdxl = tiny().parent().unwrap().join("tiny-sdxl");
    let dir = temp_dir("sdxl");
    let run = |extra: &[&str]| {
        let args = [&["-n", "blurry, dark"], extra].concat();
        generate_case(&sdxl, "5", &dir.join("out.png"), &args)
    };
    let out = run(&[
        "-p",
        "a red circle on a blue background <lora:kohya:1.0>",
        "--lora-dir",
        sdxl.join("loras").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let png = decode_png(&std::fs::read(dir.join("out.png")).unwrap()).unwrap();
    let worst = worst_diff(&png.image.data, &golden_rgb8(&sdxl, "kohya_w1"));
    assert!(worst <= 1, "8-bit pixels differ by {worst}");
    std::fs::remove_file(dir.join("out.png")).unwrap();

    let sd1 = tiny().join("loras/kohya.safetensors");
    let out = run(&[
        "-p",
        "a red circle",
        "--lora",
        &format!("{}:0.5", sd1.display()),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("kohya.safetensors")
            && err.contains("this SDXL model (tiny-sdxl)")
            && err.contains("another architecture"),
        "{err}"
    );
    assert!(!dir.join("out.png").exists(), "no output");
    std::fs::remove_dir_all(&dir).ok();
}
