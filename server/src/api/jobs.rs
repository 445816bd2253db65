//! Queueing a checked request and waiting for it. If the request's future is dropped (the client
//! disconnected, so hyper drops the handler), the guard cancels the job.

use std::sync::Arc;

use axum::http::StatusCode;
use kiln_models::pipeline::GenerationParams;
use tokio::sync::oneshot;

use super::AppState;
use crate::catalog::{ModelEntry, ModelKind};
use crate::error::{ApiError, ApiResult};
use crate::metrics::RequestKind;
use crate::queue::{JobOutput, JobRequest, Queue, QueueFull, Work};

/// Seconds a client told "queue full" should wait before trying again.
const RETRY_AFTER_SECS: u32 = 5;

pub struct CancelOnDrop {
    queue: Arc<Queue>,
    id: u64,
    pub armed: bool,
}

impl CancelOnDrop {
    pub fn new(state: &AppState, id: u64) -> CancelOnDrop {
        CancelOnDrop {
            queue: state.queue.clone(),
            id,
            armed: true,
        }
    }
}

/// 503 with Retry-After: the queue holds `--queue-size` waiting jobs already.
pub fn queue_full(state: &AppState, _: QueueFull) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "queue_full",
        format!(
            "the queue is full ({} jobs waiting); try again shortly",
            state.config.queue_size
        ),
    );
    e.retry_after = Some(RETRY_AFTER_SECS);
    e
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.queue.cancel(self.id);
        }
    }
}

/// The listed model `name` refers to; `field` names where the name came from.
pub fn resolve_model(state: &AppState, name: &str, field: &str) -> ApiResult<ModelEntry> {
    resolve_kind(state, name, field, ModelKind::Image)
}

/// The listed model of `kind` that `name` refers to.
pub fn resolve_kind(
    state: &AppState,
    name: &str,
    field: &str,
    kind: ModelKind,
) -> ApiResult<ModelEntry> {
    state.catalog.resolve_kind(name, kind).ok_or_else(|| {
        let names: Vec<String> = state
            .catalog
            .list_kind(kind)
            .into_iter()
            .map(|m| m.name)
            .collect();
        ApiError::invalid(
            field,
            format!(
                "unknown {} model {name:?}; this server has: {}",
                kind.as_str(),
                names.join(", ")
            ),
        )
    })
}

/// Runs `params` on `model` through the queue and waits for the result.
pub async fn run(
    state: &AppState,
    params: GenerationParams,
    model: ModelEntry,
    refiner: Option<(ModelEntry, f64)>,
    controls: Vec<crate::controlnets::ControlRequest>,
) -> ApiResult<JobOutput> {
    let (reply, result) = oneshot::channel();
    let id = state
        .queue
        .submit(Work::Image {
            request: Box::new(JobRequest {
                params,
                model,
                refiner,
                controls,
            }),
            reply,
        })
        .map_err(|e| queue_full(state, e))?;
    state.metrics.request(RequestKind::Image);
    let mut guard = CancelOnDrop::new(state, id);
    let out = result.await;
    guard.armed = false;
    out.unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ))
    })
}
