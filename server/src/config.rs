//! What `kiln serve` was started with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use kiln_models::embeddings::EmbeddingDb;
use kiln_nn::weights::WeightType;
use kiln_runtime::DeviceChoice;

pub use crate::llm_models::LlmSettings;

/// Where the models come from.
#[derive(Clone, Debug)]
pub enum ModelSet {
    /// One model (a diffusers folder or a `.safetensors` checkpoint): `-m`.
    Single(PathBuf),
    /// Several models named one by one (`-m` given more than once), of either kind.
    List(Vec<PathBuf>),
    /// Every diffusers folder and `.safetensors` / `.gguf` file directly in this folder:
    /// `--models-dir`.
    /// Requests can name only what is listed there, so they cannot reach outside it.
    Dir(PathBuf),
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub models: ModelSet,
    /// Model selected at start-up (a name from the set); default: the first one.
    pub default_model: Option<String>,
    pub device: DeviceChoice,
    /// How models are held on the device (`--weight-type`: f32, f16 or a quantised type).
    pub weight_type: WeightType,
    /// Keep peak device memory under this many bytes (`--max-vram`): each job is planned and the
    /// model loaded with the UNet's weights streamed and the VAE tiled as needed (as `kiln
    /// generate --max-vram`); a job that cannot fit is refused naming the smallest budget.
    pub max_vram: Option<u64>,
    /// A VAE file that replaces every image model's VAE (`--vae`).
    pub vae: Option<PathBuf>,
    pub listen: SocketAddr,
    /// With a key, every route but /health needs `Authorization: Bearer KEY` or HTTP Basic whose
    /// `user:password` (or just password) is the key.
    pub api_key: Option<String>,
    /// Jobs that may wait behind the running one; one more answers 503.
    pub queue_size: usize,
    /// Largest width * height accepted.
    pub max_pixels: usize,
    /// Most denoising steps accepted.
    pub max_steps: usize,
    /// Most images (batch_size * n_iter) in one request.
    pub max_images: usize,
    /// Largest request body in bytes (base64 init images make bodies big).
    pub max_body_bytes: usize,
    /// A preview image every this many steps (and at the last step).
    pub preview_every: usize,
    /// Chat models: slots (`--parallel`) and context (`--ctx-size`).
    pub llm: LlmSettings,
    /// A chat request stops generating after this long (`--timeout`).
    pub timeout: Option<Duration>,
    /// Images in chat requests: how many, and whether URLs are fetched.
    pub chat_images: ChatImageSettings,
    /// Textual-inversion embeddings prompts may name (`--embeddings-dir`), read at start.
    pub embeddings: Option<Arc<EmbeddingDb>>,
    /// The folder `<lora:NAME:WEIGHT>` prompt tags find NAME.safetensors in (`--lora-dir`);
    /// GET /sdapi/v1/loras lists it.
    pub lora_dir: Option<PathBuf>,
    /// The ControlNets requests may name (`--controlnet-dir`): diffusers folders and
    /// `.safetensors` files directly in it; GET /controlnet/model_list lists them.
    pub controlnet_dir: Option<PathBuf>,
    /// ESRGAN / Real-ESRGAN `.safetensors` upscalers (`--upscaler-dir`), listed by GET
    /// /sdapi/v1/upscalers under their file stems and run by POST /sdapi/v1/extra-single-image.
    pub upscaler_dir: Option<PathBuf>,
}

/// Images in chat requests (OpenAI's `image_url` content parts).
#[derive(Clone, Debug)]
pub struct ChatImageSettings {
    /// Most images one chat request may carry, over all its messages (`--max-images`).
    pub max_images: usize,
    /// Fetch `http://` and `https://` image URLs (`--allow-remote-images`); off, they are
    /// refused and clients send `data:` URLs.
    pub allow_remote: bool,
    /// How long fetching one remote image may take, body included (`--remote-image-timeout`).
    pub remote_timeout: Duration,
    /// Largest remote image in bytes.
    pub remote_max_bytes: u64,
}

impl Default for ChatImageSettings {
    fn default() -> Self {
        ChatImageSettings {
            max_images: 8,
            allow_remote: false,
            remote_timeout: Duration::from_secs(10),
            remote_max_bytes: 20 << 20,
        }
    }
}

impl ServerConfig {
    pub fn new(models: ModelSet) -> ServerConfig {
        ServerConfig {
            models,
            default_model: None,
            device: DeviceChoice::Auto,
            weight_type: WeightType::F32,
            max_vram: None,
            vae: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7860)),
            api_key: None,
            queue_size: 16,
            max_pixels: 2048 * 2048,
            max_steps: 500,
            max_images: 64,
            max_body_bytes: 64 << 20,
            preview_every: 2,
            llm: LlmSettings::default(),
            timeout: None,
            chat_images: ChatImageSettings::default(),
            embeddings: None,
            lora_dir: None,
            controlnet_dir: None,
            upscaler_dir: None,
        }
    }
}
