//! `kiln generate --plan` and `--max-vram` from the command line: the plan is printed and nothing
//! is written; a budget too small fails before starting with the minimum and no output file; a bad
//! size is named; a workable budget below the weight size streams and stays under it.

use std::path::Path;
use std::process::Output;

mod common;
use common::{kiln, temp_dir, text};

/// `kiln --device cpu --report-memory generate` (bundled model, 2 steps) + `extra`.
fn generate(dir: &Path, extra: &[&str]) -> Output {
    kiln()
        .args([
            "--device",
            "cpu",
            "--report-memory",
            "generate",
            "-p",
            "a red circle",
        ])
        .args(["--steps", "2", "-s", "3", "-o"])
        .arg(dir.join("out.png"))
        .args(extra)
        .output()
        .unwrap()
}

/// "12.34 MiB" after `label` in `s`, in bytes.
fn size_after(s: &str, label: &str) -> f64 {
    let rest = &s[s
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in {s}"))
        + label.len()..];
    let mut words = rest.split_whitespace();
    let value: f64 = words.next().unwrap().parse().unwrap();
    let unit = match words.next().unwrap() {
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => 1.0,
    };
    value * unit
}

#[test]
fn plan_prints_the_peak_and_writes_nothing() {
    let dir = temp_dir("plan");
    let out = generate(&dir, &["--plan"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for part in [
        "unet",
        "text encoder",
        "vae",
        "text encoding",
        "unet step",
        "vae decode",
    ] {
        assert!(stdout.contains(part), "{part}: {stdout}");
    }
    assert!(!dir.join("out.png").exists());
}

#[test]
fn a_budget_below_the_weights_streams_and_an_impossible_one_names_the_minimum() {
    let dir = temp_dir("budget");
    let plan = text(&generate(&dir, &["--plan"])).0;
    let weights = size_after(&plan, "total");
    let streamed = size_after(&plan, "no budget), ");
    assert!(streamed < weights, "{plan}");

    let budget = format!("{}K", ((streamed + weights) / 2.0 / 1024.0) as u64);
    let out = generate(&dir, &["--max-vram", &budget]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("streamed from host memory"), "{stderr}");
    let peak = size_after(&stderr, "peak device memory: ");
    assert!(peak <= (streamed + weights) / 2.0, "{stderr}");
    std::fs::remove_file(dir.join("out.png")).unwrap();

    let out = generate(&dir, &["--max-vram", "2M"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--max-vram 2.00 MiB is too small") && stderr.contains("at least"),
        "{stderr}"
    );
    assert!(!dir.join("out.png").exists());

    let out = generate(&dir, &["--max-vram", "lots"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`lots`") && stderr.contains("1.5G"),
        "{stderr}"
    );
}
