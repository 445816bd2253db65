//! The bundled model draws what it is asked for: the centre and corner colours of each prompt in
//! tests/fixtures/bundled_expectations.json (ranges verified with diffusers), and different prompts give
//! clearly different pictures.

use kiln_kernels::testing::with_gpu;
use kiln_models::pipeline::{generate, GenerationParams, StableDiffusion};
use kiln_runtime::{DType, Device};
use kiln_tests::root;

fn expectations() -> serde_json::Value {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/bundled_expectations.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Mean RGB over the pixels for which `inside(x, y)` holds.
fn mean_rgb(rgb: &[u8], width: usize, inside: impl Fn(usize, usize) -> bool) -> [f64; 3] {
    let mut sum = [0.0; 3];
    let mut n = 0.0;
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        if inside(i % width, i / width) {
            for c in 0..3 {
                sum[c] += px[c] as f64;
            }
            n += 1.0;
        }
    }
    sum.map(|s| s / n)
}

fn in_range(what: &str, value: [f64; 3], min: &serde_json::Value, max: &serde_json::Value) {
    for c in 0..3 {
        let (lo, hi) = (min[c].as_f64().unwrap(), max[c].as_f64().unwrap());
        assert!(
            lo <= value[c] && value[c] <= hi,
            "{what}: channel {c} = {:.1}, expected {lo}..{hi}",
            value[c]
        );
    }
}

/// Generates every prompt at `seed` and checks its colours; returns the 8-bit images.
fn check_prompts(device: &Device, seed: u64, prompts: usize) -> Vec<Vec<u8>> {
    let e = expectations();
    let model = StableDiffusion::load(&root().join("models/bundled"), device, DType::F32).unwrap();
    let (w, h) = (
        e["width"].as_u64().unwrap() as usize,
        e["height"].as_u64().unwrap() as usize,
    );
    let b = &e["centre_box"];
    let (x0, x1, y0, y1) = ["x0", "x1", "y0", "y1"]
        .map(|k| b[k].as_u64().unwrap() as usize)
        .into();
    let corner = e["corner_size"].as_u64().unwrap() as usize;
    let mut images = Vec::new();
    for p in e["prompts"].as_array().unwrap().iter().take(prompts) {
        let prompt = p["prompt"].as_str().unwrap();
        let mut params = GenerationParams::new(prompt);
        params.width = w;
        params.height = h;
        params.steps = e["steps"].as_u64().unwrap() as usize;
        params.cfg_scale = e["cfg_scale"].as_f64().unwrap() as f32;
        params.seed = seed;
        let image = generate(&model, &params, &mut |_| {})
            .unwrap()
            .remove(0)
            .to_rgb8();
        let centre = mean_rgb(&image.data, w, |x, y| {
            (x0..x1).contains(&x) && (y0..y1).contains(&y)
        });
        let corners = mean_rgb(&image.data, w, |x, y| {
            (x < corner || x >= w - corner) && (y < corner || y >= h - corner)
        });
        in_range(
            &format!("`{prompt}` seed {seed} centre"),
            centre,
            &p["centre_rgb_min"],
            &p["centre_rgb_max"],
        );
        in_range(
            &format!("`{prompt}` seed {seed} corners"),
            corners,
            &p["corner_rgb_min"],
            &p["corner_rgb_max"],
        );
        images.push(image.data);
    }
    images
}

#[test]
fn every_prompt_draws_its_colours_on_the_cpu_and_prompts_differ() {
    let min_difference = expectations()["min_mean_abs_difference_between_prompts"]
        .as_f64()
        .unwrap();
    for seed in [0, 42] {
        let images = check_prompts(&Device::Cpu, seed, usize::MAX);
        for i in 0..images.len() {
            for j in i + 1..images.len() {
                let diff: f64 = images[i]
                    .iter()
                    .zip(&images[j])
                    .map(|(a, b)| (*a as f64 - *b as f64).abs())
                    .sum::<f64>()
                    / images[i].len() as f64;
                // diffusers' smallest difference between two prompts was `min_difference`; allow slack.
                assert!(
                    diff > 0.5 * min_difference,
                    "prompts {i} and {j} (seed {seed}) differ by only {diff:.1}"
                );
            }
        }
    }
}

#[test]
fn the_red_circle_on_the_gpu() {
    with_gpu(|gpu| {
        check_prompts(gpu, 0, 1);
    });
}
