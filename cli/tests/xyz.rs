//! `kiln generate --xyz`: A1111's X/Y/Z plot on the tiny fixture model. The grid's size is the
//! cells plus A1111's label row and column, every cell in the grid is the cell's own PNG, each z
//! value's grid is written beside it, and each cell equals `kiln generate` run alone with that
//! cell's settings. Bad axes and a grid over `--max-pixels` are clear errors that write nothing.

use std::path::Path;
use std::process::Output;

use kiln_models::image::grid::Annotations;
use kiln_models::image::infotext::{InfoText, PNG_KEYWORD};
use kiln_models::image::png::{decode_png, DecodedPng};
use kiln_models::image::RgbImage;

mod common;
use common::{assert_ok, assert_refused, files_in, generate_on_cpu, temp_dir, tiny};

/// `kiln --device cpu generate -m tiny -W 32 -H 32 --steps 2 -s 42 -p "a red circle" -o OUT` +
/// `extra` (without the --steps, -s and -p defaults when `extra` gives them).
fn generate(out: &Path, extra: &[&str]) -> Output {
    let mut cmd = generate_on_cpu(&tiny());
    cmd.args(["-W", "32", "-H", "32", "-n", "blurry", "-o"])
        .arg(out);
    for (flag, value) in [("--steps", "2"), ("-s", "42"), ("-p", "a red circle")] {
        if !extra.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(extra).output().unwrap()
}

fn read(path: &Path) -> DecodedPng {
    decode_png(&std::fs::read(path).unwrap()).unwrap()
}

fn crop(im: &RgbImage, x: usize, y: usize, w: usize, h: usize) -> Vec<u8> {
    (y..y + h)
        .flat_map(|row| {
            let s = (row * im.width + x) * 3;
            im.data[s..s + w * 3].to_vec()
        })
        .collect()
}

fn labels(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

#[test]
fn a_3x2_grid_holds_each_single_generation() {
    let dir = temp_dir("grid");
    let out = generate(
        &dir.join("grid.png"),
        &["--xyz", "steps=2,3,4", "--xyz", "CFG Scale=5, 7"],
    );
    assert_ok(&out);
    let mut expected: Vec<String> = (1..=6).map(|i| format!("grid-{i:04}.png")).collect();
    expected.push("grid.png".to_string());
    assert_eq!(files_in(&dir), expected);

    let grid = read(&dir.join("grid.png"));
    // A label column 3/4 of a cell wide, a label row as tall as one line plus two spacings.
    let layout = Annotations::layout(
        32,
        32,
        &labels(&["Steps: 2", "Steps: 3", "Steps: 4"]),
        &labels(&["CFG Scale: 5.0", "CFG Scale: 7.0"]),
        0,
    )
    .unwrap();
    assert_eq!(layout.pad_left, 24);
    assert!(layout.pad_top > 0);
    assert_eq!(
        (grid.image.width, grid.image.height),
        (24 + 3 * 32, layout.pad_top + 2 * 32)
    );
    let info = InfoText::parse(grid.text(PNG_KEYWORD).unwrap());
    assert_eq!(info.get("Script"), Some("X/Y/Z plot"));
    assert_eq!(info.get("X Type"), Some("Steps"));
    assert_eq!(info.get("X Values"), Some("2,3,4"));
    assert_eq!(info.get("Y Type"), Some("CFG Scale"));
    assert_eq!(info.get("Steps"), Some("2"));

    for (i, (steps, cfg)) in [(2, 5), (3, 5), (4, 5), (2, 7), (3, 7), (4, 7)]
        .into_iter()
        .enumerate()
    {
        let cell = read(&dir.join(format!("grid-{:04}.png", i + 1)));
        let cell_info = InfoText::parse(cell.text(PNG_KEYWORD).unwrap());
        assert_eq!(cell_info.get("Steps"), Some(steps.to_string().as_str()));
        assert_eq!(cell_info.get("CFG scale"), Some(cfg.to_string().as_str()));
        assert_eq!(cell_info.get("Seed"), Some("42"));
        let (ix, iy) = (i % 3, i / 3);
        assert_eq!(
            crop(&grid.image, 24 + ix * 32, layout.pad_top + iy * 32, 32, 32),
            cell.image.data,
            "cell {i} in the grid"
        );
    }
    // Two cells against the single generation with their settings.
    for (i, steps, cfg) in [(1, "2", "5"), (6, "4", "7")] {
        let single = dir.join(format!("single-{i}.png"));
        let out = generate(&single, &["--steps", steps, "--cfg-scale", cfg]);
        assert_ok(&out);
        let cell = read(&dir.join(format!("grid-{i:04}.png")));
        assert_eq!(read(&single).image, cell.image, "cell {i}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_z_axis_puts_grids_side_by_side_under_its_labels() {
    let dir = temp_dir("z");
    let out = generate(
        &dir.join("g.png"),
        &[
            "--xyz",
            "prompt=red,blue",
            "--xyz",
            "sampler=Euler,Euler a",
            "--xyz",
            "seed=1-3",
        ],
    );
    assert_ok(&out);
    // The grid, one grid per z value (g-z1.png ..), every cell.
    assert_eq!(files_in(&dir).len(), 1 + 3 + 2 * 2 * 3);
    let sub = Annotations::layout(
        32,
        32,
        &labels(&["red", "blue"]),
        &labels(&["Euler", "Euler a"]),
        0,
    )
    .unwrap();
    assert_eq!((sub.width, sub.height), (24 + 64, sub.pad_top + 64));
    let main = Annotations::layout(
        sub.width,
        sub.height,
        &labels(&["Seed: 1", "Seed: 2", "Seed: 3"]),
        &[String::new()],
        0,
    )
    .unwrap();
    assert_eq!(main.pad_left, 0);
    assert!(main.pad_top > sub.pad_top, "the z labels' font is larger");
    let grid = read(&dir.join("g.png"));
    assert_eq!(
        (grid.image.width, grid.image.height),
        (3 * sub.width, main.pad_top + sub.height)
    );
    // Cell (x blue, y Euler a, z seed 3) = index 1 + 1 * 2 + 2 * 4 = 11.
    let cell = read(&dir.join("g-0012.png"));
    let info = InfoText::parse(cell.text(PNG_KEYWORD).unwrap());
    assert_eq!(info.prompt, "a blue circle");
    assert_eq!(info.get("Sampler"), Some("Euler a"));
    assert_eq!(info.get("Seed"), Some("3"));
    let x = 2 * sub.width + sub.pad_left + 32;
    let y = main.pad_top + sub.pad_top + 32;
    assert_eq!(crop(&grid.image, x, y, 32, 32), cell.image.data);
    // Each z value's grid is its part of the main grid under the z labels, with the x and y
    // fields of A1111's sub grid infotext and that z's seed.
    for iz in 0..3 {
        let z = read(&dir.join(format!("g-z{}.png", iz + 1)));
        assert_eq!((z.image.width, z.image.height), (sub.width, sub.height));
        let (w, h) = (sub.width, sub.height);
        let part = crop(&grid.image, iz * w, main.pad_top, w, h);
        assert_eq!(part, z.image.data, "z grid {}", iz + 1);
        let info = InfoText::parse(z.text(PNG_KEYWORD).unwrap());
        assert_eq!(info.get("X Type"), Some("Prompt S/R"));
        assert_eq!(info.get("Z Type"), None);
        assert_eq!(info.get("Seed"), Some((iz + 1).to_string().as_str()));
    }
    let single = dir.join("single.png");
    let out = generate(
        &single,
        &["-p", "a blue circle", "--sampler", "Euler a", "-s", "3"],
    );
    assert_ok(&out);
    assert_eq!(read(&single).image, cell.image);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_axes_and_oversized_grids_write_nothing() {
    let dir = temp_dir("bad");
    let out_png = dir.join("g.png");
    for (args, expect) in [
        (vec!["--xyz", "steps=10,twenty"], "Steps value \"twenty\""),
        (
            vec!["--xyz", "cfg=5", "--xyz", "colour=1"],
            "unknown axis type colour",
        ),
        (vec!["--xyz", "eta=0,1"], "\"Eta\" is not supported"),
        (
            vec!["--xyz", "sampler=Euler,Nope"],
            "Sampler value \"Nope\"",
        ),
        (
            vec!["--xyz", "prompt=green,blue"],
            "\"green\": not found in the prompt",
        ),
        (
            vec!["--xyz", "hires-upscaler=Latent"],
            "varies the hires fix",
        ),
        (
            vec!["--xyz", "checkpoint=/no/such/model"],
            "Checkpoint name value \"/no/such/model\"",
        ),
        (
            vec![
                "--xyz",
                "steps=2,3",
                "--xyz",
                "cfg=5,7",
                "--max-pixels",
                "4000",
            ],
            "over the limit of 4000 (--max-pixels)",
        ),
    ] {
        let out = generate(&out_png, &args);
        assert_refused(&out, &format!("{args:?}"), expect, &dir);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hires_axes_vary_the_second_pass() {
    let dir = temp_dir("hires");
    let hr = ["--hr-scale", "1.5", "--hr-steps", "1"];
    let mut args = hr.to_vec();
    args.extend([
        "--xyz",
        "hires-upscaler=Latent,Nearest",
        "--xyz",
        "denoising=0.4,0.6",
    ]);
    let out = generate(&dir.join("grid.png"), &args);
    assert_ok(&out);
    // Cells at the second pass's size: 48x48.
    let cell = read(&dir.join("grid-0004.png"));
    assert_eq!((cell.image.width, cell.image.height), (48, 48));
    let info = InfoText::parse(cell.text(PNG_KEYWORD).unwrap());
    assert_eq!(info.get("Hires upscaler"), Some("Nearest"));
    assert_eq!(info.get("Denoising strength"), Some("0.6"));
    // The last cell equals the single generation with its settings.
    let single = dir.join("single.png");
    let mut args = hr.to_vec();
    args.extend(["--hr-upscaler", "Nearest", "--hr-denoising", "0.6"]);
    let out = generate(&single, &args);
    assert_ok(&out);
    assert_eq!(read(&single).image, cell.image);
    std::fs::remove_dir_all(&dir).unwrap();
}
