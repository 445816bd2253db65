//! `kiln generate --control MODEL:IMAGE[:WEIGHT] --control-pre ...` from the command line, on
//! tests/fixtures/tiny-sd1 with the tiny random ControlNets of tests/fixtures/controlnet: a run
//! writes the image with the A1111 ControlNet infotext; `--plan` lists the ControlNet's weights;
//! a budget below the resident peak streams it; the control mode, resize mode and processor
//! resolution flags reach the infotext; an X/Y/Z Checkpoint name cell is the single controlled
//! generation on its checkpoint; a ControlNet for another base, an unreadable control image and a
//! bad flag fail naming them, with nothing written.

mod plan_output;

use std::path::{Path, PathBuf};
use std::process::Output;

use kiln_models::image::png::decode_png;
use plan_output::streamed_budget;

mod common;
use common::{fixtures, generate_on_cpu, temp_dir, text, tiny};

/// `kiln --device cpu generate` on tiny-sd1 (32x32, 2 steps) with one `--control` and `extra`.
fn generate(dir: &Path, control: &str, extra: &[&str]) -> Output {
    generate_with(&tiny(), dir, control, extra)
}

fn generate_with(model: &Path, dir: &Path, control: &str, extra: &[&str]) -> Output {
    generate_on_cpu(model)
        .args(["-p", "a red circle", "-W", "32", "-H", "32", "--steps", "2"])
        .args(["-s", "3", "-o"])
        .arg(dir.join("out.png"))
        .arg("--control")
        .arg(control)
        .args(extra)
        .output()
        .unwrap()
}

fn control(model: &str, weight: &str) -> String {
    let dir = fixtures().join("controlnet");
    format!(
        "{}:{}:{weight}",
        dir.join(model).display(),
        dir.join("control.png").display()
    )
}

/// A run that must succeed, and its PNG's bytes as text (the infotext chunk among them).
fn png_text(dir: &Path, control: &str, extra: &[&str]) -> String {
    let out = generate(dir, control, extra);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&std::fs::read(dir.join("out.png")).unwrap()).into_owned()
}

#[test]
fn a_controlled_run_writes_the_image_with_its_infotext() {
    let dir = temp_dir("run");
    let info = png_text(&dir, &control("sd1-a", "0.5"), &["--control-pre", "canny"]);
    assert!(
        info.contains("ControlNet 0: \"Module: canny, Model: sd1-a [")
            && info.contains("Weight: 0.5"),
        "no ControlNet infotext in the PNG"
    );
}

/// The extension's unit settings from the command line reach the infotext; a bad one is named.
#[test]
fn control_mode_resize_and_resolution_flags() {
    let dir = temp_dir("modes");
    let flags = [
        "--control-pre",
        "canny",
        "--control-mode",
        "prompt",
        "--control-resize",
        "fill",
        "--control-res",
        "64",
    ];
    let info = png_text(&dir, &control("sd1-a", "1"), &flags);
    assert!(
        info.contains("Resize Mode: Resize and Fill")
            && info.contains("Control Mode: My prompt is more important"),
        "no unit settings in the PNG's infotext"
    );
    std::fs::remove_file(dir.join("out.png")).unwrap();
    for (flag, value) in [
        ("--control-mode", "loud"),
        ("--control-resize", "stretch"),
        ("--control-res", "10"),
    ] {
        let out = generate(&dir, &control("sd1-a", "1"), &[flag, value]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(stderr.contains(flag), "{stderr}");
        assert!(!dir.join("out.png").exists());
    }
}

#[test]
fn the_plan_counts_the_controlnet_and_a_small_budget_streams_it() {
    let dir = temp_dir("plan");
    let out = generate(&dir, &control("sd1-a", "1"), &["--plan"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("controlnet"))
        .unwrap_or_else(|| panic!("no controlnet row in\n{stdout}"));
    assert!(row.contains("streamed:"), "{row}");
    assert!(!dir.join("out.png").exists());

    // The plan's streamed peak is a budget that fits only with the blocks streamed.
    let budget = streamed_budget(&stdout);
    let out = generate(&dir, &control("sd1-a", "1"), &["--max-vram", &budget]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("UNet weights streamed from host memory"),
        "{stderr}"
    );
    assert!(dir.join("out.png").exists());
}

#[test]
fn a_controlnet_for_another_base_or_a_bad_image_is_named_and_nothing_is_written() {
    let dir = temp_dir("bad");
    let out = generate(&dir, &control("sdxl", "1"), &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--control") && stderr.contains("another base model"),
        "{stderr}"
    );
    assert!(!dir.join("out.png").exists());

    let missing = format!(
        "{}:{}",
        fixtures().join("controlnet/sd1-a").display(),
        dir.join("nope.png").display()
    );
    let out = generate(&dir, &missing, &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the control image") && stderr.contains("nope.png"),
        "{stderr}"
    );
    assert!(!dir.join("out.png").exists());
}

/// A Checkpoint name cell with a ControlNet is the single controlled generation on that
/// checkpoint (a copy of tiny-sd1 as the other checkpoint; the ControlNet is opened for it).
#[test]
fn an_xyz_checkpoint_cell_runs_its_own_controlnet() {
    let dir = temp_dir("xyz");
    let file = dir.join("copy-of-tiny-sd1");
    copy_dir(&fixtures().join("tiny-sd1"), &file);
    let axis = format!("checkpoint={}", file.display());
    let cn = control("sd1-a", "1");
    std::fs::create_dir_all(dir.join("grid")).unwrap();
    let out = generate(&dir.join("grid"), &cn, &["--xyz", &axis]);
    assert!(out.status.success(), "{}", text(&out).1);
    let single = dir.join("single");
    std::fs::create_dir_all(&single).unwrap();
    let out = generate_with(&file, &single, &cn, &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    let pixels = |path: PathBuf| {
        decode_png(&std::fs::read(path).unwrap())
            .unwrap()
            .image
            .data
    };
    assert_eq!(
        pixels(dir.join("grid/out-0001.png")),
        pixels(single.join("out.png"))
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
