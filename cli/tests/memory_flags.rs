//! `kiln generate --vae-tiling / --vae-on-cpu / --text-encoder-on-cpu` and the peak-memory report,
//! on the tiny fixture model (VAE factor 2: a 64x64 image is 32x32 latents, cut into 3x3 tiles of
//! 16 with --vae-tile-size 16 --vae-tile-overlap 4).

use std::path::Path;
use std::process::Output;

use kiln_models::image::png::decode_png;

mod common;
use common::{kiln, stderr, temp_dir, tiny};

/// `kiln [global] generate -m tiny -p "a red circle" -W 64 -H 64 --steps 2 -s 7 -o OUT` + `extra`.
fn generate(global: &[&str], out: &Path, extra: &[&str]) -> Output {
    let mut cmd = kiln();
    cmd.args(["--device", "cpu"])
        .args(global)
        .args(["generate", "-m"])
        .arg(tiny())
        .args(["-p", "a red circle", "-W", "64", "-H", "64", "--steps", "2"])
        .args(["-s", "7", "-o"])
        .arg(out)
        .args(extra);
    cmd.output().unwrap()
}

fn pixels(path: &Path) -> Vec<u8> {
    decode_png(&std::fs::read(path).unwrap())
        .unwrap()
        .image
        .data
}

/// PSNR of 8-bit images.
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
}

/// Tiled decode gives an image close to the untiled one (the VAE-level tests bound it tightly; here
/// the flags must reach the pipeline: a different image, within 30 dB), and the offload flags on
/// the CPU device change nothing.
#[test]
fn vae_tiling_and_offload_flags_generate() {
    let dir = temp_dir("flags");
    let run = |name: &str, extra: &[&str]| {
        let path = dir.join(name);
        let out = generate(&[], &path, extra);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{name}: quiet off a terminal");
        pixels(&path)
    };
    let plain = run("plain.png", &[]);
    let tiled = run(
        "tiled.png",
        &[
            "--vae-tiling",
            "--vae-tile-size",
            "16",
            "--vae-tile-overlap",
            "4",
        ],
    );
    let db = psnr(&plain, &tiled);
    eprintln!("tiled vs untiled: {db:.1} dB");
    assert!(tiled != plain, "--vae-tiling did not tile");
    assert!(db > 30.0, "tiled vs untiled {db:.1} dB"); // measured 36.6 dB
    let offloaded = run("cpu.png", &["--vae-on-cpu", "--text-encoder-on-cpu"]);
    assert_eq!(offloaded, plain);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn report_memory_prints_weights_and_activations() {
    let dir = temp_dir("report");
    let out = generate(&["--report-memory"], &dir.join("out.png"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("peak device memory: "))
        .unwrap_or_else(|| panic!("no report in {err:?}"));
    assert!(
        line.contains("(weights ") && line.contains(", activations "),
        "{line}"
    );
    // stdout still carries only the output path.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dir.join("out.png").display().to_string()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_tile_settings_are_refused_before_loading() {
    let dir = temp_dir("bad");
    let out = generate(
        &[],
        &dir.join("out.png"),
        &["--vae-tile-size", "16", "--vae-tile-overlap", "9"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--vae-tile-overlap") && err.contains("twice the overlap"),
        "{err}"
    );
    let out = generate(
        &[],
        &dir.join("out.png"),
        &["--vae-tiling", "--no-vae-tiling"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "left files"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kiln bench sd` on the GPU under test with the VAE and text encoder on the CPU backend: the
/// device peak and the CPU-backend peak are reported apart, and the CPU part is non-zero.
#[test]
fn bench_sd_reports_offloaded_memory_apart() {
    let Some(kiln_runtime::Device::Gpu(ctx)) = kiln_kernels::testing::gpu() else {
        return;
    };
    let json = std::env::temp_dir().join(format!("kiln-bench-offload-{}.json", std::process::id()));
    let out = kiln()
        .args([
            "--device",
            &format!("gpu:{}", ctx.index()),
            "bench",
            "sd",
            "-m",
        ])
        .arg(tiny())
        .args(["--steps", "1", "-W", "32", "-H", "32", "--vae-on-cpu"])
        .args(["--text-encoder-on-cpu", "--vae-tiling", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("peak CPU-backend memory (offloaded parts)"),
        "{text}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cpu = r["cpu_offload_peak_bytes"].as_u64().unwrap();
    let weights = r["weight_bytes"].as_u64().unwrap();
    assert!(cpu > 0 && weights > 0, "{r}");
    assert!(r["peak_memory_bytes"].as_u64().unwrap() >= weights, "{r}");
    let _ = std::fs::remove_file(&json);
}
