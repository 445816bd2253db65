//! diffusers' `AutoencoderKL` as SD 1.x / 2.x use it (DownEncoderBlock2D / UpDecoderBlock2D, a
//! single-head mid-block attention, quant_conv and post_quant_conv), built from its `config.json`
//! and its diffusers state-dict names.
//!
//! Latent scaling is the caller's, as in diffusers: `encode` gives the VAE's own latent
//! distribution and `decode` takes the VAE's own latents; `scale_latents` / `unscale_latents` convert
//! to and from what the UNet sees (`z * scaling_factor`, with SD's 0.18215).

mod attention;
mod blocks;
mod config;
mod decoder;
mod encoder;
mod latent;
mod memory;
mod model;
mod resnet;
mod tiling;

pub use attention::{attention_by_matmul, single_head_attention};
pub use config::VaeConfig;
pub use latent::{latents_from, LatentDist, LOGVAR_RANGE};
pub use model::AutoencoderKL;
pub use tiling::VaeTiling;
