//! Peak device memory of tiled against untiled VAE decode. Its own test binary: the CPU backend's
//! byte counter is per process, so no other test may allocate while this one measures.
//!
//! The bundled model's VAE (factor 4) decodes 48x48 latents (192x192 pixels) whole and in tiles of
//! 16 latent pixels. Expected: the tiled peak is below half the untiled one, and it does not grow
//! with the image (the device holds one tile's activations at a time, and the output image is
//! allocated after the last tile, smaller than a tile's activations here): the tiled peaks at
//! 48x48 and 32x32 latents are within 10% of each other. Measured on the CPU backend: untiled
//! 13.57 MiB, tiled 1.54 MiB (32x32: 1.52 MiB); llvmpipe 13.62, 1.57 and 1.52 MiB (pool size classes).

use std::path::Path;

use kiln_kernels::testing::with_gpu;
use kiln_models::vae::{AutoencoderKL, VaeConfig, VaeTiling};
use kiln_nn::weights::Weights;
use kiln_runtime::loader::WeightFile;
use kiln_runtime::memory::format_bytes;
use kiln_runtime::{DType, Device};

fn load(device: &Device) -> AutoencoderKL {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/bundled/vae");
    let cfg = VaeConfig::from_file(dir.join("config.json")).unwrap();
    let file = WeightFile::open(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    AutoencoderKL::new(&cfg, &Weights::new(vec![file], device, DType::F32)).unwrap()
}

fn check(device: &Device) {
    let vae = load(device);
    let tiling = VaeTiling::new(16, 4).unwrap();
    let untiled = vae.decode_peak_bytes(1, 48, 48, None).unwrap();
    let tiled = vae.decode_peak_bytes(1, 48, 48, Some(&tiling)).unwrap();
    let tiled_small = vae.decode_peak_bytes(1, 32, 32, Some(&tiling)).unwrap();
    eprintln!(
        "{}: decode 48x48 latents: untiled peak {}, tiled {} (tiled 32x32: {})",
        device.name(),
        format_bytes(untiled),
        format_bytes(tiled),
        format_bytes(tiled_small)
    );
    assert!(tiled < untiled, "tiled {tiled} >= untiled {untiled}");
    // The whole image's activations are several times one tile's.
    assert!(2 * tiled < untiled, "tiled {tiled} vs untiled {untiled}");
    let ratio = tiled as f64 / tiled_small as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "the tiled peak grew {ratio:.2}x from 32x32 to 48x48 latents"
    );
}

#[test]
fn tiling_lowers_and_bounds_the_decode_peak() {
    check(&Device::Cpu);
    with_gpu(check);
}
