//! `kiln serve`: the HTTP API and web page (kiln-server) with the CLI's device and model choice.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_llm::model::is_gguf;
use kiln_llm::vision::read_mmproj_config;
use kiln_llm::MistralConfig;
use kiln_runtime::DeviceChoice;
use kiln_server::{ChatImageSettings, LlmSettings, ModelSet, Server, ServerConfig};

use crate::chat::bundled_chat_model;
use crate::generate::{bundled_model, parse_max_vram, read_embeddings};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A model to serve: a diffusers folder or .safetensors checkpoint (images), or a
    /// transformers LLM folder (chat); give -m more than once to serve several. Default: the
    /// bundled tiny image model and the bundled chat model (unless --models-dir is given).
    #[arg(short = 'm', long, conflicts_with = "models_dir")]
    model: Vec<PathBuf>,

    /// Serve every diffusers folder, LLM folder and .safetensors / .gguf file in this folder;
    /// clients pick one by name (sd_model_checkpoint, or `model` in OpenAI requests), and no name
    /// reaches outside the folder.
    #[arg(long)]
    models_dir: Option<PathBuf>,

    /// With --models-dir: the model selected at start (default: the first by name).
    #[arg(long, requires = "models_dir")]
    default_model: Option<String>,

    /// Address to listen on; 0.0.0.0 exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    listen: IpAddr,

    /// Port (7860, as A1111 and SD.Next).
    #[arg(long, default_value_t = 7860)]
    port: u16,

    /// Require `Authorization: Bearer KEY` (or HTTP Basic with the key as password, or
    /// `user:pass` as in A1111's --api-auth) on every route but /health.
    #[arg(long, env = "KILN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Jobs that may wait behind the running one; more get 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    queue_size: usize,

    /// Largest width * height a request may ask for.
    #[arg(long, default_value_t = 2048 * 2048)]
    max_pixels: usize,

    /// How model weights are held: f32, f16, or packed q8_0 / q4_0 / nf4 (as `generate`).
    #[arg(long, default_value = "f32")]
    weight_type: String,

    /// Keep peak device memory under SIZE (e.g. 1.5G, 800M), as `kiln generate --max-vram`: each
    /// job is planned, and the model is loaded with the UNet's weights streamed from host memory
    /// and the VAE tiled when the job needs it to fit (reloaded only when that changes). A job
    /// that cannot fit is answered 400 with the smallest budget that would do.
    #[arg(long, value_name = "SIZE")]
    max_vram: Option<String>,

    /// Folder of textual-inversion embeddings (.safetensors) that prompts may name, as `kiln
    /// generate --embeddings-dir`; listed by GET /sdapi/v1/embeddings.
    #[arg(long, value_name = "DIR")]
    embeddings_dir: Option<PathBuf>,

    /// A VAE .safetensors that replaces every image model's VAE, as `kiln generate --vae`.
    #[arg(long, value_name = "FILE")]
    vae: Option<PathBuf>,

    /// Most denoising steps a request may ask for.
    #[arg(long, default_value_t = 500)]
    max_steps: usize,

    /// Chat slots (as llama-server's -np): up to N replies decode together, one batched step each.
    #[arg(short = 'n', long, default_value_t = 1)]
    parallel: usize,

    /// Total chat context in tokens, split evenly over the slots (as llama-server's -c).
    /// Default: the model's limit, at most 16384.
    #[arg(short = 'c', long)]
    ctx_size: Option<usize>,

    /// Chat template for chat models instead of the model's own: mistral-v7, mistral-v3 or a
    /// Jinja file (as llama-server's --chat-template), e.g. to offer tools with a model whose
    /// template has none.
    #[arg(long)]
    chat_template: Option<String>,

    /// Seconds a chat request may run; past it, generation stops and the request gets a 504
    /// (or an error event when streaming).
    #[arg(long)]
    timeout: Option<u64>,

    /// Most images one chat request may carry, over all its messages (OpenAI image_url parts);
    /// more are refused with a 400 (as vLLM's --limit-mm-per-prompt image=N). 0 refuses images.
    /// Each image takes up to about 3,000 tokens of context with Mistral Small 3.1.
    #[arg(long, default_value_t = 8)]
    max_images: usize,

    /// Fetch http:// and https:// image URLs in chat requests (at most 20 MiB each, within
    /// --remote-image-timeout). Off by default, and then such URLs are refused with a 400: the
    /// server would GET any URL a client names, addresses on its own network included. Clients
    /// can always send images inline as data:image/png;base64,... URLs.
    #[arg(long)]
    allow_remote_images: bool,

    /// With --allow-remote-images: seconds fetching one image may take, body included.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    remote_image_timeout: f64,

    /// llama.cpp's multimodal projector file (`mmproj-*.gguf`, Pixtral / Mistral Small 3.x) for
    /// the one GGUF text model given with -m: its vision tower and projector, so chat requests
    /// may carry images (as llama-server's --mmproj).
    #[arg(long, value_name = "FILE")]
    mmproj: Option<PathBuf>,

    /// The folder of LoRA files (`NAME.safetensors`, subfolders too) that prompts' A1111 tags
    /// `<lora:NAME:WEIGHT>` pick from; GET /sdapi/v1/loras lists it.
    #[arg(long = "lora-dir", value_name = "DIR")]
    lora_dir: Option<PathBuf>,

    /// The folder of ControlNets (diffusers folders, `.safetensors` files) that requests'
    /// `alwayson_scripts.controlnet` units name; GET /controlnet/model_list lists it.
    #[arg(long = "controlnet-dir", value_name = "DIR")]
    controlnet_dir: Option<PathBuf>,

    /// The folder of ESRGAN / Real-ESRGAN upscalers (`NAME.safetensors`) that GET
    /// /sdapi/v1/upscalers lists and POST /sdapi/v1/extra-single-image runs by NAME.
    #[arg(long = "upscaler-dir", value_name = "DIR")]
    upscaler_dir: Option<PathBuf>,
}

/// `--mmproj`, checked against the one GGUF model before the server starts, so a projector
/// that does not fit the model fails here rather than on the first request.
fn checked_mmproj(args: &ServeArgs) -> Result<Option<PathBuf>> {
    let Some(mmproj) = &args.mmproj else {
        return Ok(None);
    };
    let model = match &args.model[..] {
        [one] if is_gguf(one) => one,
        _ => bail!("--mmproj needs exactly one -m FILE.gguf (a GGUF text model)"),
    };
    let config = MistralConfig::for_model(model)?;
    read_mmproj_config(mmproj, &config)
        .with_context(|| format!("--mmproj {}", mmproj.display()))?;
    Ok(Some(mmproj.clone()))
}

pub fn run(args: &ServeArgs, device: DeviceChoice) -> Result<()> {
    let models = match (&args.model[..], &args.models_dir) {
        ([one], _) => ModelSet::Single(one.clone()),
        ([], Some(d)) => ModelSet::Dir(d.clone()),
        ([], None) => ModelSet::List(vec![bundled_model()?, bundled_chat_model()?]),
        (several, _) => ModelSet::List(several.to_vec()),
    };
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    if args.queue_size == 0 {
        bail!("--queue-size must be at least 1");
    }
    let mut config = ServerConfig::new(models);
    config.weight_type = args.weight_type.parse()?;
    config.max_vram = parse_max_vram(args.max_vram.as_deref())?;
    config.embeddings = read_embeddings(args.embeddings_dir.as_deref())?;
    config.vae = args.vae.clone();
    config.default_model = args.default_model.clone();
    config.device = device;
    config.listen = SocketAddr::new(args.listen, args.port);
    config.api_key = args.api_key.clone().filter(|k| !k.is_empty());
    config.queue_size = args.queue_size;
    config.max_pixels = args.max_pixels;
    config.max_steps = args.max_steps;
    config.llm = LlmSettings {
        parallel: args.parallel,
        ctx_size: args.ctx_size,
        chat_template: args.chat_template.clone(),
        mmproj: checked_mmproj(args)?,
    };
    config.timeout = args.timeout.map(std::time::Duration::from_secs);
    if !(args.remote_image_timeout > 0.0 && args.remote_image_timeout <= 3600.0) {
        bail!("--remote-image-timeout must be more than 0 and at most 3600 seconds");
    }
    config.chat_images = ChatImageSettings {
        max_images: args.max_images,
        allow_remote: args.allow_remote_images,
        remote_timeout: std::time::Duration::from_secs_f64(args.remote_image_timeout),
        ..ChatImageSettings::default()
    };
    if let Some(dir) = &args.lora_dir {
        if !dir.is_dir() {
            bail!("--lora-dir {}: not a folder", dir.display());
        }
    }
    config.lora_dir = args.lora_dir.clone();
    if let Some(dir) = &args.controlnet_dir {
        if !dir.is_dir() {
            bail!("--controlnet-dir {}: not a folder", dir.display());
        }
    }
    config.controlnet_dir = args.controlnet_dir.clone();
    if let Some(dir) = &args.upscaler_dir {
        if !dir.is_dir() {
            bail!("--upscaler-dir {}: not a folder", dir.display());
        }
    }
    config.upscaler_dir = args.upscaler_dir.clone();
    let server = Server::start(config)?;
    eprintln!(
        "kiln serve: {} on {} (web page at {}/, API docs at {}/docs)",
        server.url(),
        server.device(),
        server.url(),
        server.url()
    );
    server.wait();
    Ok(())
}
