//! `kiln generate` end to end on the tiny fixture model: PNG output with A1111's infotext, batch
//! numbering, repeatability, and bad input (clear error, non-zero exit, no output file).

use std::path::Path;
use std::process::Output;

use kiln_models::image::infotext::{InfoText, PNG_KEYWORD};
use kiln_models::image::png::decode_png;

mod common;
use common::{files_in, generate_on_cpu, kiln, stderr, temp_dir, tiny};

/// `kiln --device cpu generate -m tiny -W 32 -H 32 --steps 2 -s 42 -o DIR/out.png` + `extra`
/// (without the -W/-H/-s defaults when `extra` gives them).
fn generate(dir: &Path, extra: &[&str]) -> Output {
    let mut cmd = generate_on_cpu(&tiny());
    cmd.args(["--steps", "2", "-o"]).arg(dir.join("out.png"));
    for (flag, value) in [("-W", "32"), ("-H", "32"), ("-s", "42")] {
        if !extra.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(extra).output().unwrap()
}

#[test]
fn writes_a_png_with_a1111_parameters() {
    let dir = temp_dir("png");
    let out = generate(&dir, &["-p", "a red circle, blue", "-n", "dark"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_in(&dir), vec!["out.png"]);
    let png = decode_png(&std::fs::read(dir.join("out.png")).unwrap()).unwrap();
    assert_eq!((png.image.width, png.image.height), (32, 32));
    let info = InfoText::parse(png.text(PNG_KEYWORD).unwrap());
    assert_eq!(info.prompt, "a red circle, blue");
    assert_eq!(info.negative_prompt, "dark");
    assert_eq!(info.get("Steps"), Some("2"));
    assert_eq!(info.get("Sampler"), Some("Euler"));
    assert_eq!(info.get("Seed"), Some("42"));
    assert_eq!(info.get("Size"), Some("32x32"));
    assert_eq!(info.get("Model"), Some("tiny-sd1"));
    let hash = info.get("Model hash").unwrap();
    assert_eq!(hash.len(), 10);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    // Quiet when not a terminal: only the output path on stdout, nothing on stderr.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dir.join("out.png").display().to_string()
    );
    assert!(out.stderr.is_empty(), "{}", stderr(&out));

    // The same command again writes the same bytes.
    let first = std::fs::read(dir.join("out.png")).unwrap();
    let again = generate(&dir, &["-p", "a red circle, blue", "-n", "dark"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(std::fs::read(dir.join("out.png")).unwrap(), first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn batches_are_numbered_with_consecutive_seeds() {
    let dir = temp_dir("batch");
    let out = generate(
        &dir,
        &[
            "-p",
            "x",
            "-b",
            "2",
            "--batch-count",
            "2",
            "--sampler",
            "euler_a",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        files_in(&dir),
        vec!["out-1.png", "out-2.png", "out-3.png", "out-4.png"]
    );
    for (i, name) in files_in(&dir).iter().enumerate() {
        let png = decode_png(&std::fs::read(dir.join(name)).unwrap()).unwrap();
        let info = InfoText::parse(png.text(PNG_KEYWORD).unwrap());
        assert_eq!(info.get("Seed"), Some((42 + i).to_string().as_str()));
        assert_eq!(info.get("Sampler"), Some("Euler a"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn img2img_and_inpainting_run() {
    let dir = temp_dir("img2img");
    let init = tiny().join("init.png");
    let mask = tiny().join("mask.png");
    let out = generate(
        &dir,
        &["-p", "x", "-i", init.to_str().unwrap(), "--strength", "0.5"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let png = decode_png(&std::fs::read(dir.join("out.png")).unwrap()).unwrap();
    let info = InfoText::parse(png.text(PNG_KEYWORD).unwrap());
    assert_eq!(info.get("Denoising strength"), Some("0.5"));
    let out = generate(
        &dir,
        &[
            "-p",
            "x",
            "-i",
            init.to_str().unwrap(),
            "--mask",
            mask.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a failing command: non-zero exit, `expect` in the message, no file in `dir`.
fn fails(dir: &Path, out: Output, expect: &str) {
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "succeeded; expected an error with {expect:?}"
    );
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert!(
        files_in(dir).is_empty(),
        "left files {:?} ({err})",
        files_in(dir)
    );
}

#[test]
fn bad_input_is_a_clear_error_with_no_output() {
    let dir = temp_dir("bad");
    let scratch = temp_dir("bad-scratch");
    for (args, expect) in [
        (["-p", "x", "-W", "30"], "multiple of 8"),
        (["-p", "x", "-H", "0"], "multiple of 8"),
        (["-p", "x", "--sampler", "heunpp9"], "unknown sampler"),
        (
            ["-p", "x", "--schedule", "exponentialish"],
            "unknown schedule",
        ),
        (["-p", "x", "--rng", "dice"], "random number source"),
    ] {
        fails(&dir, generate(&dir, &args), expect);
    }
    fails(&dir, generate(&dir, &["-p", "x", "-s", "-7"]), "seed");
    let missing = scratch.join("missing.png");
    fails(
        &dir,
        generate(&dir, &["-p", "x", "-i", missing.to_str().unwrap()]),
        "cannot read image",
    );
    let not_image = scratch.join("not-an-image.png");
    std::fs::write(&not_image, b"hello").unwrap();
    fails(
        &dir,
        generate(&dir, &["-p", "x", "-i", not_image.to_str().unwrap()]),
        "not-an-image.png",
    );
    let init = tiny().join("init.png");
    fails(
        &dir,
        generate(
            &dir,
            &[
                "-p",
                "x",
                "-i",
                init.to_str().unwrap(),
                "--mask",
                not_image.to_str().unwrap(),
            ],
        ),
        "cannot read image",
    );
    fails(
        &dir,
        generate(&dir, &["-p", "x", "--mask", init.to_str().unwrap()]),
        "--mask needs an init image",
    );
    fails(
        &dir,
        generate(
            &dir,
            &["-p", "x", "-i", init.to_str().unwrap(), "--strength", "1.5"],
        ),
        "strength",
    );
    fails(
        &dir,
        generate(&dir, &["-p", "x", "--clip-skip", "9"]),
        "clip skip",
    );

    // Models: missing, a folder without model_index.json, a pickle.
    let run = |model: &Path| {
        kiln()
            .args(["--device", "cpu", "generate", "-p", "x", "-m"])
            .arg(model)
            .arg("-o")
            .arg(dir.join("out.png"))
            .output()
            .unwrap()
    };
    fails(&dir, run(&scratch.join("no-such-model")), "no such file");
    fails(&dir, run(&scratch), "model_index.json");
    let ckpt = scratch.join("model.ckpt");
    std::fs::write(&ckpt, b"pickle").unwrap();
    fails(&dir, run(&ckpt), "pickle");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn without_a_model_the_bundled_one_is_used_or_named() {
    let dir = temp_dir("bundled");
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/bundled");
    let out = kiln()
        .args([
            "--device", "cpu", "generate", "-p", "x", "--steps", "1", "-o",
        ])
        .arg(dir.join("out.png"))
        .output()
        .unwrap();
    if bundled.join("model_index.json").is_file() {
        assert!(out.status.success(), "{}", stderr(&out));
    } else {
        fails(&dir, out, "bundled default model");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_sdxl_folder_generates_at_its_default_size_and_plans_both_encoders() {
    let dir = temp_dir("sdxl");
    let sdxl = tiny().join("../tiny-sdxl");
    let out = kiln()
        .args(["--device", "cpu", "generate", "-m"])
        .arg(&sdxl)
        .args(["-p", "a red circle", "--steps", "2", "-s", "3", "-o"])
        .arg(dir.join("out.png"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let png = decode_png(&std::fs::read(dir.join("out.png")).unwrap()).unwrap();
    // unet sample_size 32 x the tiny VAE's factor 2, as diffusers' default.
    assert_eq!((png.image.width, png.image.height), (64, 64));
    let info = InfoText::parse(png.text(PNG_KEYWORD).unwrap());
    assert_eq!(info.get("Model"), Some("tiny-sdxl"));
    assert_eq!(info.get("Size"), Some("64x64"));

    let plan = kiln()
        .args(["--device", "cpu", "generate", "-m"])
        .arg(&sdxl)
        .args(["-p", "x", "--steps", "2", "--plan", "--weight-type", "q8_0"])
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", stderr(&plan));
    let report = String::from_utf8_lossy(&plan.stdout).into_owned() + &stderr(&plan);
    assert!(
        report.contains("text encoder 2") && report.contains("unet step"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_vae_file_replaces_the_models_vae_and_is_named_in_the_infotext() {
    let dir = temp_dir("vae");
    let plain = generate(&dir, &["-p", "a red circle"]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let own = decode_png(&std::fs::read(dir.join("out.png")).unwrap()).unwrap();
    std::fs::remove_file(dir.join("out.png")).unwrap();

    // The model's own VAE weights as a file of their own: the same image, now with the VAE named.
    let vae = tiny().join("vae/diffusion_pytorch_model.safetensors");
    let vae_arg = vae.to_str().unwrap();
    let out = generate(&dir, &["-p", "a red circle", "--vae", vae_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let png = decode_png(&std::fs::read(dir.join("out.png")).unwrap()).unwrap();
    assert_eq!(png.image.data, own.image.data);
    let info = InfoText::parse(png.text(PNG_KEYWORD).unwrap());
    assert_eq!(info.get("VAE"), Some("diffusion_pytorch_model.safetensors"));
    let hash = kiln_models::pipeline::short_hash(&vae).unwrap();
    assert_eq!(info.get("VAE hash"), Some(hash.as_str()));
    let keys: Vec<&str> = info.params.iter().map(|(k, _)| k.as_str()).collect();
    let model = keys.iter().position(|k| *k == "Model").unwrap();
    assert_eq!(keys[model + 1..model + 3], ["VAE hash", "VAE"]);
    std::fs::remove_file(dir.join("out.png")).unwrap();

    // A missing file is refused before the model loads, and nothing is written.
    let missing = dir.join("no-such-vae.safetensors");
    let out = generate(&dir, &["-p", "x", "--vae", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no-such-vae.safetensors"),
        "{}",
        stderr(&out)
    );
    assert!(files_in(&dir).is_empty());
    std::fs::remove_dir_all(dir).ok();
}
