//! Whole-model cases: an SD 1.5-architecture UNet evaluation and VAE decode, and an SDXL UNet
//! evaluation at 1024 px, with random weights of the real shapes (configs in benches/configs/, taken
//! from the published SD 1.5 and SDXL base 1.0 checkpoints).
//! Quick cases keep SD 1.5's topology with narrow channels, for tests on a software adapter.

use std::sync::Arc;

use kiln_kernels::testing::Rng;
use kiln_models::controlnet::{ControlInputs, ControlNetConfig, ControlNetModel, ResidualCurve};
use kiln_models::unet::{AddedCond, Unet, UnetConfig};
use kiln_models::upscale::{Architecture, RrdbConfig, UpscalerModel};
use kiln_models::vae::{AutoencoderKL, VaeConfig};
use kiln_nn::weights::{RandomSource, Weights};
use kiln_runtime::{DType, Device, Result, Tensor};
use serde_json::{json, Value};

use crate::cases::{case, Case, Runner, Size, Work};

const SD15_UNET: &str = include_str!("../configs/sd15-unet.json");
const SD15_VAE: &str = include_str!("../configs/sd15-vae.json");
const SDXL_UNET: &str = include_str!("../configs/sdxl-unet.json");
/// CLIP ViT-L's context: 77 tokens of 768.
const CONTEXT_TOKENS: usize = 77;

/// SD 1.5's config, or for quick runs the same topology 10x narrower (32 channels at the top).
fn unet_config(size: Size) -> Value {
    let mut cfg: Value = serde_json::from_str(SD15_UNET).expect("bundled UNet config is JSON");
    if size == Size::Quick {
        cfg["block_out_channels"] = json!([32, 32, 64, 64]);
        cfg["cross_attention_dim"] = json!(64);
        cfg["attention_head_dim"] = json!(4);
        cfg["layers_per_block"] = json!(1);
    }
    cfg
}

fn vae_config(size: Size) -> Value {
    let mut cfg: Value = serde_json::from_str(SD15_VAE).expect("bundled VAE config is JSON");
    if size == Size::Quick {
        cfg["block_out_channels"] = json!([32, 32, 64, 64]);
        cfg["layers_per_block"] = json!(1);
    }
    cfg
}

/// The name of SD 1.5's topology at `size` in case names.
fn sd15_name(size: Size) -> &'static str {
    if size == Size::Quick {
        "tiny"
    } else {
        "sd15"
    }
}

fn random_input(device: &Device, shape: &[usize], dtype: DType, seed: u64) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_f32(device, shape, dtype, &Rng::new(seed).normals(n))
}

/// Random weights of whatever shapes a model asks for, `what` naming them in errors.
fn random_weights(what: &str, seed: u64, device: &Device, dtype: DType) -> Weights {
    Weights::from_source(Arc::new(RandomSource::new(what, seed)), device, dtype)
}

/// The inputs of one denoising evaluation that the UNet-family cases share: a batch of latents,
/// CLIP's 77-token context and timestep 999.
#[derive(Clone, Copy)]
struct Denoise {
    batch: usize,
    latent: usize,
    context_dim: usize,
}

impl Denoise {
    /// For `config` at `pixels`, the context width defaulting to `default_context`.
    fn new(config: &Value, pixels: usize, batch: usize, default_context: u64) -> Self {
        let context_dim = config["cross_attention_dim"]
            .as_u64()
            .unwrap_or(default_context) as usize;
        Denoise {
            batch,
            latent: pixels / 8,
            context_dim,
        }
    }

    /// The arguments tools/torch_bench.py reads, `config` among them.
    fn params(&self, config: &Value) -> Value {
        json!({
            "config": config,
            "batch": self.batch,
            "latent": self.latent,
            "context_tokens": CONTEXT_TOKENS,
            "timestep": 999.0,
        })
    }

    /// The latents' shape, as the case's shape label writes it.
    fn sample_label(&self) -> String {
        let (b, l) = (self.batch, self.latent);
        format!("[{b},4,{l},{l}]")
    }

    /// The context's shape, as the case's shape label writes it.
    fn context_label(&self) -> String {
        format!("ctx [{},{CONTEXT_TOKENS},{}]", self.batch, self.context_dim)
    }

    /// Random latents (seed 2) and context (seed 3), and the timesteps, on `device`.
    fn inputs(&self, device: &Device, dtype: DType) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, l) = (self.batch, self.latent);
        let sample = random_input(device, &[b, 4, l, l], dtype, 2)?;
        let context = random_input(device, &[b, CONTEXT_TOKENS, self.context_dim], dtype, 3)?;
        let t = Tensor::from_f32(device, &[b], dtype, &vec![999.0; b])?;
        Ok((sample, context, t))
    }
}

fn unet_case(size: Size, dtype: DType, pixels: usize, batch: usize) -> Case {
    let config = unet_config(size);
    let d = Denoise::new(&config, pixels, batch, 768);
    case(
        &format!("unet {} {pixels}px b{batch}", sd15_name(size)),
        "unet",
        dtype,
        (
            format!("{} {}", d.sample_label(), d.context_label()),
            d.params(&config),
        ),
        Work::Model,
        move |device| -> Result<Runner> {
            let cfg = UnetConfig::from_json(&config.to_string())?;
            let weights = random_weights("random UNet weights", 1, device, dtype);
            let unet = Unet::new(&cfg, &weights)?;
            let (sample, context, t) = d.inputs(device, dtype)?;
            Ok(Box::new(move || unet.forward(&sample, &t, &context)))
        },
    )
}

/// An SDXL UNet evaluation (batch 2, one guided step) with its added conditioning: bigG's pooled
/// 1280 values and the six size numbers of a `pixels` x `pixels` image.
fn sdxl_unet_case(dtype: DType, pixels: usize, batch: usize) -> Case {
    let config: Value = serde_json::from_str(SDXL_UNET).expect("bundled SDXL config is JSON");
    let d = Denoise::new(&config, pixels, batch, 2048);
    let time_dim = config["addition_time_embed_dim"].as_u64().unwrap_or(256) as usize;
    let projection = config["projection_class_embeddings_input_dim"]
        .as_u64()
        .unwrap_or(2816) as usize;
    let pooled = projection - 6 * time_dim;
    let size = pixels as f32;
    let time_ids = [size, size, 0.0, 0.0, size, size];
    let mut params = d.params(&config);
    params["pooled"] = json!(pooled);
    params["time_ids"] = json!(time_ids);
    case(
        &format!("unet sdxl {pixels}px b{batch}"),
        "unet",
        dtype,
        (
            format!("{} {} pooled {pooled}", d.sample_label(), d.context_label()),
            params,
        ),
        Work::Model,
        move |device| -> Result<Runner> {
            let cfg = UnetConfig::from_json(&config.to_string())?;
            let weights = random_weights("random SDXL UNet weights", 6, device, dtype);
            let unet = Unet::new(&cfg, &weights)?;
            let (sample, context, t) = d.inputs(device, dtype)?;
            let text_embeds = random_input(device, &[batch, pooled], dtype, 7)?;
            let ids: Vec<f32> = (0..batch).flat_map(|_| time_ids).collect();
            let time_ids = Tensor::from_f32(device, &[batch, 6], dtype, &ids)?;
            Ok(Box::new(move || {
                let added = AddedCond {
                    text_embeds: &text_embeds,
                    time_ids: &time_ids,
                };
                unet.forward_with(&sample, &t, &context, Some(added))
            }))
        },
    )
}

/// A ControlNet evaluation on the UNet's config (SD 1.5's encoder, the 16/32/96/256 hint encoder):
/// the extra work per guided step with one ControlNet, beside the UNet case of the same size.
fn controlnet_case(size: Size, dtype: DType, pixels: usize, batch: usize) -> Case {
    let config = unet_config(size);
    let d = Denoise::new(&config, pixels, batch, 768);
    case(
        &format!("controlnet {} {pixels}px b{batch}", sd15_name(size)),
        "controlnet",
        dtype,
        (
            format!(
                "{} hint [{batch},3,{pixels},{pixels}] {}",
                d.sample_label(),
                d.context_label()
            ),
            d.params(&config),
        ),
        Work::Model,
        move |device| -> Result<Runner> {
            let cfg = ControlNetConfig::from_json(&config.to_string())?;
            let weights = random_weights("random ControlNet weights", 8, device, dtype);
            let net = ControlNetModel::new(&cfg, &weights)?;
            let (sample, context, t) = d.inputs(device, dtype)?;
            let cond = random_input(device, &[batch, 3, pixels, pixels], dtype, 9)?;
            Ok(Box::new(move || {
                let r = net.forward(&ControlInputs {
                    sample: &sample,
                    timesteps: &t,
                    context: &context,
                    added: None,
                    cond: &cond,
                    scale: 1.0,
                    curve: ResidualCurve::Flat,
                })?;
                Ok(r.mid)
            }))
        },
    )
}

fn vae_decode_case(size: Size, dtype: DType, pixels: usize) -> Case {
    let config = vae_config(size);
    let latent = pixels / 8;
    let params = json!({"config": config, "batch": 1, "latent": latent});
    case(
        &format!("vae-decode {} {pixels}px", sd15_name(size)),
        "vae_decode",
        dtype,
        (
            format!("[1,4,{latent},{latent}] -> [1,3,{pixels},{pixels}]"),
            params,
        ),
        Work::Model,
        move |device| -> Result<Runner> {
            let cfg = VaeConfig::from_json(&config.to_string(), "random VAE config")?;
            let weights = random_weights("random VAE weights", 4, device, dtype);
            let vae = AutoencoderKL::new(&cfg, &weights)?;
            let z = random_input(device, &[1, 4, latent, latent], dtype, 5)?;
            Ok(Box::new(move || vae.decode(&z)))
        },
    )
}

/// ESRGAN / Real-ESRGAN x4plus's RRDBNet (64 features, 23 blocks, growth 32, x4) on a `pixels`
/// square input; quick runs keep 2 blocks. Reported per output megapixel.
fn upscaler_case(size: Size, dtype: DType, pixels: usize) -> Case {
    let num_block = if size == Size::Quick { 2 } else { 23 };
    let config = RrdbConfig {
        in_ch: 3,
        out_ch: 3,
        num_feat: 64,
        num_block,
        num_grow_ch: 32,
        num_up: 2,
        unshuffle: 1,
    };
    let out = pixels * 4;
    let params = json!({
        "config": {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 64,
                   "num_block": num_block, "num_grow_ch": 32},
        "pixels": pixels,
    });
    case(
        &format!("upscale rrdbnet-x4 b{num_block} {pixels}px"),
        "upscale_rrdbnet",
        dtype,
        (
            format!("[1,3,{pixels},{pixels}] -> [1,3,{out},{out}]"),
            params,
        ),
        Work::Pixels((out * out) as f64),
        move |device| -> Result<Runner> {
            let weights = random_weights("random RRDBNet weights", 8, device, dtype);
            let model = UpscalerModel::with_architecture(&weights, Architecture::Rrdb(config))?;
            // An image in [0, 1], as the model sees one.
            let n = 3 * pixels * pixels;
            let values: Vec<f32> = Rng::new(9)
                .normals(n)
                .iter()
                .map(|v| v.abs().min(1.0))
                .collect();
            let x = Tensor::from_f32(device, &[1, 3, pixels, pixels], dtype, &values)?;
            Ok(Box::new(move || model.forward(&x)))
        },
    )
}

/// UNet (batch 2, as one classifier-free-guidance step), a ControlNet beside it at 512, VAE decode
/// at 256 and 512 pixels, the SDXL UNet at 1024 and the ESRGAN x4 upscaler on 64 pixels, or tiny
/// versions at 64 / 16.
pub fn model_cases(size: Size, dtype: DType) -> Vec<Case> {
    match size {
        Size::Standard => vec![
            unet_case(size, dtype, 256, 2),
            unet_case(size, dtype, 512, 2),
            controlnet_case(size, dtype, 512, 2),
            vae_decode_case(size, dtype, 256),
            vae_decode_case(size, dtype, 512),
            sdxl_unet_case(dtype, 1024, 2),
            upscaler_case(size, dtype, 64),
        ],
        Size::Quick => vec![
            unet_case(size, dtype, 64, 2),
            controlnet_case(size, dtype, 64, 2),
            vae_decode_case(size, dtype, 64),
            upscaler_case(size, dtype, 16),
        ],
    }
}
