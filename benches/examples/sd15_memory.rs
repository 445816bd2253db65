//! Peak memory of an SD 1.5-architecture 512x512 generation by weight type, measured with the
//! device's byte accounting (run it on the CPU backend, which counts bytes the way the GPU pool
//! does, without size-class rounding): random weights of the real shapes (benches/configs/ and CLIP
//! ViT-L's text config), one UNet evaluation at batch 2 (a classifier-free-guidance step), and the
//! VAE decode whole and in tiles. Prints one JSON object.
//!
//! ```text
//! cargo run --release -p kiln-benches --example sd15_memory -- q4_0 [TILE OVERLAP [weights]]
//! ```
//!
//! With `weights` it only loads the models and prints their bytes (seconds instead of minutes).

use std::sync::Arc;
use std::time::Instant;

use kiln_models::clip::{ClipTextConfig, ClipTextModel};
use kiln_models::unet::{Unet, UnetConfig};
use kiln_models::vae::{AutoencoderKL, VaeConfig, VaeTiling};
use kiln_nn::weights::{RandomSource, WeightType, Weights};
use kiln_runtime::{Device, Result, Tensor};

const SD15_UNET: &str = include_str!("../configs/sd15-unet.json");
const SD15_VAE: &str = include_str!("../configs/sd15-vae.json");
/// transformers' CLIPTextConfig of openai/clip-vit-large-patch14 (SD 1.5's text encoder).
const CLIP_L: &str = r#"{"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
  "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
  "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2}"#;

fn weights(device: &Device, wt: WeightType, seed: u64) -> Weights {
    let source = Arc::new(RandomSource::new("random SD 1.5 weights", seed));
    Weights::from_source(source, device, wt.float_dtype()).quantized(wt.quantization())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let wt: WeightType = args.get(1).map(String::as_str).unwrap_or("f32").parse()?;
    let tile = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(32);
    let overlap = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(8);
    let tiling = VaeTiling::new(tile, overlap)?;
    let device = Device::Cpu;
    let live = || device.memory_stats().live;

    let unet = Unet::new(&UnetConfig::from_json(SD15_UNET)?, &weights(&device, wt, 1))?;
    let unet_weights = live();
    let vae_cfg = VaeConfig::from_json(SD15_VAE, "sd15-vae.json")?;
    let vae = AutoencoderKL::new(&vae_cfg, &weights(&device, wt, 2))?;
    let vae_weights = live() - unet_weights;
    let clip = ClipTextModel::new(
        &ClipTextConfig::from_json(CLIP_L, "clip-vit-large")?,
        &weights(&device, wt, 3),
    )?;
    let text_weights = live() - unet_weights - vae_weights;
    if args.get(4).map(String::as_str) == Some("weights") {
        let report = serde_json::json!({
            "weight_type": wt.to_string(),
            "unet_weights": unet_weights, "vae_weights": vae_weights,
            "text_encoder_weights": text_weights,
        });
        println!("{report}");
        return Ok(());
    }

    // One UNet evaluation: batch 2 of 64x64 latents, 77 tokens of context.
    let dtype = unet.dtype();
    let base = live();
    device.reset_peak_memory();
    let sample = Tensor::zeros(&device, &[2, 4, 64, 64], dtype)?;
    let t = Tensor::from_f32(&device, &[1], dtype, &[999.0])?;
    let context = Tensor::zeros(&device, &[2, 77, 768], dtype)?;
    let start = Instant::now();
    let eps = unet.forward(&sample, &t, &context)?;
    let unet_ms = start.elapsed().as_secs_f64() * 1e3;
    let unet_activations = device.memory_stats().peak_live - base;
    drop((sample, t, context, eps));

    let start = Instant::now();
    let vae_untiled = vae.decode_peak_bytes(1, 64, 64, None)?;
    let untiled_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let vae_tiled = vae.decode_peak_bytes(1, 64, 64, Some(&tiling))?;
    let tiled_ms = start.elapsed().as_secs_f64() * 1e3;
    drop(clip);

    let weights = unet_weights + vae_weights + text_weights;
    let report = serde_json::json!({
        "weight_type": wt.to_string(),
        "tile": tile, "overlap": overlap,
        "unet_weights": unet_weights, "vae_weights": vae_weights, "text_encoder_weights": text_weights,
        "unet_activations": unet_activations,
        "vae_decode_activations": vae_untiled,
        "vae_decode_tiled_activations": vae_tiled,
        "peak_untiled": weights + unet_activations.max(vae_untiled),
        "peak_tiled": weights + unet_activations.max(vae_tiled),
        "unet_eval_ms": unet_ms, "vae_decode_ms": untiled_ms, "vae_decode_tiled_ms": tiled_ms,
    });
    println!("{report}");
    Ok(())
}
