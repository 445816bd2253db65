//! The HTTP surface: A1111's `/sdapi/v1/*`, OpenAI's `/v1/images/generations` and `/v1/models`,
//! Server-Sent Events progress, `/health`, the OpenAPI document and the web page.

mod auth;
mod body;
mod chat;
mod events;
mod hires;
pub(crate) mod images;
mod info;
mod jobs;
mod loras;
mod openai;
mod openapi;
mod options;
mod outpaint;
mod request;
mod sdapi;
mod status;
mod upscalers;
mod web;
mod xyz;

pub use chat::install_tls_provider;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{Map, Value};

use crate::catalog::Catalog;
use crate::config::ServerConfig;
use crate::llm_models::LlmInfos;
use crate::metrics::Metrics;
use crate::progress::ProgressHub;
use crate::queue::Queue;
use kiln_models::lora::LoraLibrary;
pub use openapi::ROUTES;
use request::Settings;

pub struct AppState {
    pub config: ServerConfig,
    pub catalog: Arc<Catalog>,
    pub queue: Arc<Queue>,
    pub progress: Arc<ProgressHub>,
    pub device_name: String,
    pub metrics: Arc<Metrics>,
    pub llms: Arc<LlmInfos>,
    /// The client that fetches remote chat images (`--allow-remote-images`), made on first use.
    pub image_client: OnceLock<reqwest::Client>,
    /// Server-wide settings (POST /sdapi/v1/options) and every other option a client stored.
    options: Mutex<(Settings, Map<String, Value>)>,
    /// `--lora-dir`, with the LoRA files read so far.
    pub loras: Option<Arc<LoraLibrary>>,
}

impl AppState {
    // Built once, in Server::start, from each part of the server; a struct of parts would only
    // repeat these names.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: ServerConfig,
        catalog: Arc<Catalog>,
        queue: Arc<Queue>,
        progress: Arc<ProgressHub>,
        device_name: String,
        checkpoint: String,
        metrics: Arc<Metrics>,
        llms: Arc<LlmInfos>,
    ) -> AppState {
        let settings = Settings {
            checkpoint,
            clip_skip: 1,
            rng: kiln_models::rng::RngKind::TorchCpu,
        };
        // `kiln serve` checks the folder before starting; one that vanished since lists nothing.
        let loras = config
            .lora_dir
            .as_deref()
            .and_then(|d| LoraLibrary::new(d).ok())
            .map(Arc::new);
        AppState {
            loras,
            config,
            catalog,
            queue,
            progress,
            device_name,
            metrics,
            llms,
            image_client: OnceLock::new(),
            options: Mutex::new((settings, Map::new())),
        }
    }

    fn options(&self) -> MutexGuard<'_, (Settings, Map<String, Value>)> {
        self.options.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settings(&self) -> Settings {
        self.options().0.clone()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/", get(web::index))
        .route("/health", get(status::health))
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::docs))
        .route("/sdapi/v1/txt2img", post(sdapi::txt2img))
        .route("/sdapi/v1/img2img", post(sdapi::img2img))
        .route("/sdapi/v1/progress", get(status::progress))
        .route("/sdapi/v1/progress/stream", get(events::stream))
        .route("/sdapi/v1/interrupt", post(status::interrupt))
        .route("/sdapi/v1/skip", post(status::skip))
        .route("/sdapi/v1/sd-models", get(options::sd_models))
        .route("/sdapi/v1/refresh-checkpoints", post(options::refresh))
        .route("/sdapi/v1/samplers", get(options::samplers))
        .route("/sdapi/v1/loras", get(loras::list))
        .route("/controlnet/model_list", get(options::controlnet_models))
        .route(
            "/sdapi/v1/latent-upscale-modes",
            get(options::latent_upscale_modes),
        )
        .route("/controlnet/module_list", get(options::controlnet_modules))
        .route("/sdapi/v1/refresh-loras", post(options::refresh))
        .route("/sdapi/v1/schedulers", get(options::schedulers))
        .route("/sdapi/v1/embeddings", get(options::embeddings))
        .route(
            "/sdapi/v1/options",
            get(options::get_options).post(options::set_options),
        )
        .route("/sdapi/v1/png-info", post(sdapi::png_info))
        .route("/sdapi/v1/scripts", get(sdapi::scripts))
        .route("/sdapi/v1/upscalers", get(upscalers::list))
        .route(
            "/sdapi/v1/extra-single-image",
            post(upscalers::extra_single_image),
        )
        .route("/v1/images/generations", post(openai::generations))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(chat::completions))
        .route("/tokenize", post(chat::tokenize))
        .route("/detokenize", post(chat::detokenize))
        .route("/metrics", get(status::metrics))
        .fallback(status::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A seed in A1111's range (below 2^32), from the standard library's per-process random keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() & 0xffff_ffff
}
