//! `kiln serve`: AUTOMATIC1111's HTTP API (`/sdapi/v1/*`, so its existing clients work
//! unchanged), OpenAI's images API, a job queue with progress (polled and as Server-Sent Events
//! with previews), and a web page.
//!
//! Threads: the async runtime answers HTTP; one worker thread owns the device and the loaded model
//! and runs jobs from a bounded FIFO one at a time (generation blocks for seconds to minutes).
//!
//! ```text
//! let server = Server::start(ServerConfig::new(ModelSet::Single(path)))?;
//! println!("{}", server.url());
//! ```

// A job's GenerationParams can hold a loaded refiner model (Arc<StableDiffusion>, down to wgpu's
// types); proving the SSE streams Send then needs more than the default 128 levels.
#![recursion_limit = "256"]

mod api;
mod catalog;
mod chat_job;
pub mod config;
mod controlnets;
mod error;
mod llm_models;
mod metrics;
mod preview;
mod progress;
mod queue;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use api::ROUTES;
pub use config::{ChatImageSettings, LlmSettings, ModelSet, ServerConfig};

use crate::api::AppState;
use crate::catalog::{Catalog, ModelKind};
use crate::llm_models::LlmInfos;
use crate::metrics::Metrics;
use crate::progress::ProgressHub;
use crate::queue::Queue;

/// Why the server could not start: bad models, a device that will not open, an address in use.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServerError(String);

/// A running server; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    device: String,
    queue: Arc<Queue>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    http: Option<JoinHandle<()>>,
}

impl Server {
    /// Checks the models, opens the device, binds `config.listen` (port 0 picks a free one) and
    /// serves on background threads.
    pub fn start(config: ServerConfig) -> Result<Server, ServerError> {
        api::install_tls_provider();
        let catalog = Arc::new(Catalog::new(config.models.clone()));
        let checkpoint = default_checkpoint(&config, &catalog)?;
        let queue = Arc::new(Queue::new(config.queue_size));
        let progress = Arc::new(ProgressHub::default());
        let metrics = Arc::new(Metrics::default());
        if config.llm.parallel == 0 {
            return Err(ServerError("--parallel must be at least 1".into()));
        }
        let (_worker, device) = worker::spawn(
            config.device,
            worker::Shared {
                queue: queue.clone(),
                progress: progress.clone(),
                catalog: catalog.clone(),
                metrics: metrics.clone(),
            },
            worker::LoadSettings {
                weight_type: config.weight_type,
                max_vram: config.max_vram,
                vae: vae_choice(&config)?,
            },
            config.llm.clone(),
            config.preview_every,
        )
        .map_err(ServerError)?;

        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| ServerError(format!("cannot listen on {}: {e}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ServerError(e.to_string()))?;
        let llms = Arc::new(LlmInfos::new(config.llm.clone()));
        let state = Arc::new(AppState::new(
            config,
            catalog,
            queue.clone(),
            progress,
            device.clone(),
            checkpoint,
            metrics,
            llms,
        ));
        let app = api::router(state);
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ServerError(format!("cannot start the async runtime: {e}")))?;
        let http = std::thread::Builder::new()
            .name("kiln-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let serve = async {
                        let _ = axum::serve(listener, app).await;
                    };
                    // Not a graceful shutdown: open event streams never end on their own, and the
                    // queue is closed anyway, so waiting requests are already answered.
                    tokio::select! {
                        _ = serve => {}
                        _ = stop => {}
                    }
                });
                runtime.shutdown_background();
            })
            .map_err(|e| ServerError(format!("cannot start the HTTP thread: {e}")))?;
        Ok(Server {
            addr,
            device,
            queue,
            shutdown: Some(shutdown),
            http: Some(http),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The device the worker runs on.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Serves until the HTTP thread ends (it does not on its own: the process is stopped).
    pub fn wait(mut self) {
        if let Some(http) = self.http.take() {
            let _ = http.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        // Waiting requests get a 503; the running job stops at its next step. The worker thread
        // is not joined: it may be inside a model load.
        self.queue.close();
    }
}

/// The image model selected at start: `default_model` if given (it must be listed), else the
/// first image model; empty when only chat models are served (image requests then name none).
fn default_checkpoint(config: &ServerConfig, catalog: &Catalog) -> Result<String, ServerError> {
    let missing =
        |p: &std::path::Path| ServerError(format!("model {} does not exist", p.display()));
    match &config.models {
        ModelSet::Single(p) if !p.exists() => return Err(missing(p)),
        ModelSet::List(paths) => {
            if let Some(p) = paths.iter().find(|p| !p.exists()) {
                return Err(missing(p));
            }
        }
        ModelSet::Dir(d) if !d.is_dir() => {
            return Err(ServerError(format!(
                "models folder {} does not exist",
                d.display()
            )))
        }
        _ => {}
    }
    let models = catalog.list();
    if let Some(name) = &config.default_model {
        return catalog
            .resolve_kind(name, ModelKind::Image)
            .map(|m| m.name)
            .ok_or_else(|| {
                ServerError(format!(
                    "model {name:?} is not among the served image models ({})",
                    catalog
                        .list_kind(ModelKind::Image)
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            });
    }
    if models.is_empty() {
        return Err(ServerError(
            "no models to serve: the models folder has no diffusers or LLM folders, \
             .safetensors or .gguf files"
                .into(),
        ));
    }
    Ok(models
        .iter()
        .find(|m| m.kind == ModelKind::Image)
        .map(|m| m.name.clone())
        .unwrap_or_default())
}

/// `--vae`: the file's name and A1111 hash for infotexts, read once here, so a missing or
/// unreadable file stops the server before it listens.
fn vae_choice(config: &ServerConfig) -> Result<Option<worker::VaeChoice>, ServerError> {
    let Some(path) = &config.vae else {
        return Ok(None);
    };
    let hash =
        kiln_models::pipeline::short_hash(path).map_err(|e| ServerError(format!("--vae: {e}")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Some(worker::VaeChoice {
        path: path.clone(),
        name,
        hash,
    }))
}
