//! `kiln generate --refiner MODEL --refiner-switch F` on the tiny SDXL base and refiner folders:
//! A1111's infotext fields, `--plan` and `--max-vram` counting the refiner, and bad input (clear
//! error, non-zero exit, no output file).

mod plan_output;

use std::path::{Path, PathBuf};
use std::process::Output;

use kiln_models::image::infotext::{InfoText, PNG_KEYWORD};
use kiln_models::image::png::decode_png;
use kiln_models::pipeline::short_hash;
use plan_output::streamed_budget;

mod common;
use common::{assert_refused, files_in, fixtures, generate_on_cpu, stderr, temp_dir};

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// `kiln --device cpu generate -m MODEL -p "a red circle" -W 32 -H 32 --steps 4 -o DIR/out.png`
/// + `extra`.
fn generate(dir: &Path, model: &str, extra: &[&str]) -> Output {
    generate_on_cpu(&fixture(model))
        .args([
            "-p",
            "a red circle",
            "-W",
            "32",
            "-H",
            "32",
            "--steps",
            "4",
            "-o",
        ])
        .arg(dir.join("out.png"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn the_refiner_is_named_in_the_infotext() {
    let dir = temp_dir("refiner");
    let refiner = fixture("tiny-sdxl-refiner");
    let out = generate(
        &dir,
        "tiny-sdxl",
        &[
            "--refiner",
            refiner.to_str().unwrap(),
            "--refiner-switch",
            "0.5",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let png = decode_png(&std::fs::read(dir.join("out.png")).unwrap()).unwrap();
    let info = InfoText::parse(png.text(PNG_KEYWORD).unwrap());
    let hash = short_hash(&refiner.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    assert_eq!(
        info.get("Refiner"),
        Some(format!("tiny-sdxl-refiner [{hash}]").as_str())
    );
    assert_eq!(info.get("Refiner switch at"), Some("0.5"));
    assert_eq!(info.get("Model"), Some("tiny-sdxl"));

    // Without --refiner-switch: A1111's 0.8.
    std::fs::remove_file(dir.join("out.png")).unwrap();
    let out = generate(&dir, "tiny-sdxl", &["--refiner", refiner.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let png = decode_png(&std::fs::read(dir.join("out.png")).unwrap()).unwrap();
    let info = InfoText::parse(png.text(PNG_KEYWORD).unwrap());
    assert_eq!(info.get("Refiner switch at"), Some("0.8"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_plan_counts_the_refiner_and_a_small_budget_streams_both_unets() {
    let dir = temp_dir("refiner-plan");
    let refiner = fixture("tiny-sdxl-refiner");
    let with_refiner = |extra: &[&str]| {
        let mut args = vec!["--refiner", refiner.to_str().unwrap(), "--seed", "42"];
        args.extend(extra);
        generate(&dir, "tiny-sdxl", &args)
    };
    let out = with_refiner(&["--plan"]);
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("main model only"), "{err}");
    for name in ["refiner unet", "refiner text encoder 2", "refiner vae"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(name)),
            "no {name} row in\n{stdout}"
        );
    }
    assert!(stdout.contains("refiner step"), "{stdout}");
    assert!(files_in(&dir).is_empty());

    // The plan's streamed peak is a budget that fits only with both UNets streamed: the refiner's
    // weights are on the device too, so an uncounted or resident refiner would fail under it.
    let budget = streamed_budget(&stdout);
    let out = with_refiner(&["--max-vram", &budget]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("UNet weights streamed from host memory"),
        "{err}"
    );
    let streamed_png = std::fs::read(dir.join("out.png")).unwrap();
    std::fs::remove_file(dir.join("out.png")).unwrap();

    // A budget the resident run fits, and no budget: the same image each way.
    let out = with_refiner(&["--max-vram", "1G"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("every weight resident"), "{err}");
    let resident_png = std::fs::read(dir.join("out.png")).unwrap();
    std::fs::remove_file(dir.join("out.png")).unwrap();
    let out = with_refiner(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let unbudgeted = std::fs::read(dir.join("out.png")).unwrap();
    assert_eq!(resident_png, unbudgeted);
    assert_eq!(streamed_png, unbudgeted);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_refiner_input_is_a_clear_error_with_no_output() {
    let dir = temp_dir("refiner-bad");
    let refiner = fixture("tiny-sdxl-refiner");
    let refiner = refiner.to_str().unwrap();
    let sd1 = fixture("tiny-sd1");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "tiny-sdxl",
            vec!["--refiner", refiner, "--refiner-switch", "1.5"],
            "--refiner-switch: refiner switch 1.5 must be between 0 and 1",
        ),
        (
            "tiny-sdxl",
            vec!["--refiner", refiner, "--refiner-switch", "0"],
            "must be between 0 and 1",
        ),
        (
            "tiny-sdxl",
            vec!["--refiner-switch", "0.5"],
            "--refiner-switch needs a refiner model (--refiner)",
        ),
        (
            "tiny-sdxl",
            vec!["--refiner", sd1.to_str().unwrap()],
            "refiner tiny-sd1 is not an SDXL model",
        ),
        (
            "tiny-sdxl",
            vec!["--refiner", "/no/such/refiner"],
            "--refiner /no/such/refiner: no such file or folder",
        ),
        // The refiner on its own draws nothing from noise (diffusers runs it only as img2img).
        ("tiny-sdxl-refiner", vec![], "is an SDXL refiner"),
    ];
    for (model, extra, expect) in cases {
        let out = generate(&dir, model, &extra);
        assert_refused(&out, &format!("{extra:?}"), expect, &dir);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `--xyz` with `--refiner`: every cell runs the refiner and names it, as the single generation.
#[test]
fn xyz_cells_run_the_refiner() {
    let dir = temp_dir("refiner-xyz");
    let refiner = fixture("tiny-sdxl-refiner");
    let with_refiner = [
        "--refiner",
        refiner.to_str().unwrap(),
        "--refiner-switch",
        "0.5",
    ];
    let single = [&with_refiner[..], &["-s", "5", "--cfg-scale", "7"]].concat();
    let out = generate(&dir, "tiny-sdxl", &single);
    assert!(out.status.success(), "{}", stderr(&out));
    let alone = decode_png(&std::fs::read(dir.join("out.png")).unwrap()).unwrap();
    let plot = [&with_refiner[..], &["-s", "5", "--xyz", "cfg=3,7"]].concat();
    let out = generate(&dir, "tiny-sdxl", &plot);
    assert!(out.status.success(), "{}", stderr(&out));
    let cell = decode_png(&std::fs::read(dir.join("out-0002.png")).unwrap()).unwrap();
    assert_eq!(cell.image, alone.image);
    assert_eq!(cell.text(PNG_KEYWORD), alone.text(PNG_KEYWORD));
    let info = InfoText::parse(cell.text(PNG_KEYWORD).unwrap());
    assert_eq!(info.get("Refiner switch at"), Some("0.5"));
    std::fs::remove_dir_all(&dir).ok();
}
