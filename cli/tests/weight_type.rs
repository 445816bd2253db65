//! `kiln generate --weight-type` and `kiln quantize`: quantised generation writes an image close to
//! the f32 one, a quantised model folder generates, and unknown types are clear errors with no
//! output.

use std::path::Path;
use std::process::{Command, Output};

use kiln_models::image::png::decode_png;

mod common;
use common::{assert_ok, generate_on_cpu, temp_dir, tiny};

fn generate(out: &Path, weight_type: &str) -> Output {
    generate_on_cpu(&tiny())
        .args([
            "-p",
            "a red circle",
            "--steps",
            "2",
            "-W",
            "32",
            "-H",
            "32",
            "-s",
            "42",
        ])
        .args(["--weight-type", weight_type, "-o"])
        .arg(out)
        .output()
        .unwrap()
}

fn pixels(path: &Path) -> Vec<u8> {
    decode_png(&std::fs::read(path).unwrap())
        .unwrap()
        .image
        .data
}

#[test]
fn quantised_weights_give_an_image_close_to_f32() {
    let dir = temp_dir("weight-type");
    let f32_png = dir.join("f32.png");
    let q8_png = dir.join("q8.png");
    for (png, wt) in [(&f32_png, "f32"), (&q8_png, "q8_0")] {
        let out = generate(png, wt);
        assert!(
            out.status.success(),
            "{wt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (a, b) = (pixels(&f32_png), pixels(&q8_png));
    assert_ne!(a, b, "q8_0 packed nothing");
    // 8-bit pixels: q8_0 moves few of them by more than a couple of levels (measured max 3).
    let max = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    assert!(max <= 8, "q8_0 differs from f32 by up to {max} levels");
}

#[test]
fn unknown_weight_type_is_a_clear_error_without_output() {
    let dir = temp_dir("weight-type-bad");
    let png = dir.join("out.png");
    let out = generate(&png, "q9_k");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown weight type `q9_k`") && err.contains("nf4"),
        "{err}"
    );
    // A ggml type kiln reads from GGUF files but does not pack into: refused, saying so.
    let out = generate(&png, "q5_k");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reads q5_K weights from GGUF files") || err.contains("reads q5_k weights"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "files left in {}",
        dir.display()
    );
}

/// `kiln quantize --type TY` of the tiny model into `out`.
fn quantize(ty: &str, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["quantize", "--type", ty, "-m"])
        .arg(tiny())
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn kiln_quantize_writes_a_model_that_generates() {
    let dir = temp_dir("quantize");
    let model = dir.join("tiny-q8");
    let out = quantize("q8_0", &model);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("packed as q8_0"), "{err}");
    let png = dir.join("out.png");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env_remove("KILN_DEVICE")
        .args([
            "--device",
            "cpu",
            "generate",
            "-p",
            "a red circle",
            "--steps",
            "2",
        ])
        .args(["-W", "32", "-H", "32", "-m"])
        .arg(&model)
        .arg("-o")
        .arg(&png)
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(png.is_file());
}

#[test]
fn kiln_quantize_rejects_an_unknown_type_without_output() {
    let dir = temp_dir("quantize-bad");
    let out = quantize("q9_k", &dir.join("model"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown format `q9_k`"), "{err}");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    // A read-only ggml type: refused, naming what kiln packs.
    let out = quantize("q3_k", &dir.join("model"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("packs only q8_0, q4_0 and nf4"), "{err}");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
}
