//! `Offload`: the VAE and the text encoder on the CPU backend while the UNet runs on the GPU under
//! test, against everything on the GPU, on the tiny fixture model (32x32, 3 steps of Euler, CFG 7).
//!
//! Tolerance: the offloaded parts compute in the CPU backend's arithmetic instead of the GPU's, so
//! the images differ by f32 rounding only: max |difference| 1e-3 on pixels in [0, 1] (measured
//! ~1e-6 on llvmpipe). The GPU holds less after loading (no VAE / text encoder weights there).

use std::path::PathBuf;

use kiln_kernels::testing::with_gpu;
use kiln_models::pipeline::{generate, Offload, StableDiffusion};
use kiln_nn::weights::WeightType;
use kiln_runtime::Device;
use kiln_tests::fixtures;
use kiln_tests::params::red_circle;

const MAX_PIXEL_DIFF: f32 = 1e-3;

fn tiny() -> PathBuf {
    fixtures().join("tiny-sd1")
}

/// The image and the GPU's live bytes right after loading.
fn run(device: &Device, offload: Offload) -> (Vec<f32>, u64) {
    device.synchronize().unwrap();
    let before = device.memory_stats().live;
    let model = StableDiffusion::load_offloaded(&tiny(), device, WeightType::F32, offload).unwrap();
    device.synchronize().unwrap();
    let loaded = device.memory_stats().live - before;
    assert!(
        model.device() == device,
        "the UNet must stay on {}",
        device.name()
    );
    let on_cpu = |yes: bool| {
        if yes {
            "cpu".to_string()
        } else {
            device.name()
        }
    };
    assert_eq!(model.vae.device().name(), on_cpu(offload.vae_on_cpu));
    assert_eq!(
        model.text_encoder.as_ref().unwrap().device().name(),
        on_cpu(offload.text_encoder_on_cpu)
    );
    let params = red_circle(32, 3, 11);
    let images = generate(&model, &params, &mut |_| {}).unwrap();
    (images[0].pixels.clone(), loaded)
}

#[test]
fn offloaded_components_give_the_same_image() {
    with_gpu(|gpu| {
        let (all, all_bytes) = run(gpu, Offload::default());
        for offload in [
            Offload {
                vae_on_cpu: true,
                text_encoder_on_cpu: false,
            },
            Offload {
                vae_on_cpu: false,
                text_encoder_on_cpu: true,
            },
            Offload {
                vae_on_cpu: true,
                text_encoder_on_cpu: true,
            },
        ] {
            let (img, bytes) = run(gpu, offload);
            let diff = img
                .iter()
                .zip(&all)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            eprintln!(
                "{offload:?}: max pixel diff {diff:e}, GPU weights {bytes} B (all on GPU {all_bytes} B)"
            );
            assert!(diff <= MAX_PIXEL_DIFF, "{offload:?}: {diff}");
            assert!(bytes < all_bytes, "{offload:?}: {bytes} >= {all_bytes}");
        }
    });
}
