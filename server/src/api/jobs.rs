//! Queueing a checked request and waiting for it. If the request's future is dropped (the client
//! disconnected, so hyper drops the handler), the guard cancels the job.

use std::sync::Arc;

use axum::http::StatusCode;
use kiln_models::pipeline::GenerationParams;
use tokio::sync::oneshot;

use super::AppState;
use crate::catalog::ModelEntry;
use crate::error::{ApiError, ApiResult};
use crate::queue::{JobOutput, JobRequest, Queue};

/// Seconds a client told "queue full" should wait before trying again.
const RETRY_AFTER_SECS: u32 = 5;

struct CancelOnDrop {
    queue: Arc<Queue>,
    id: u64,
    armed: bool,
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
    state.catalog.resolve(name).ok_or_else(|| {
        let names: Vec<String> = state.catalog.list().into_iter().map(|m| m.name).collect();
        ApiError::invalid(
            field,
            format!(
                "unknown model {name:?}; this server has: {}",
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
) -> ApiResult<JobOutput> {
    let (reply, result) = oneshot::channel();
    let id = state
        .queue
        .submit(JobRequest { params, model }, reply)
        .map_err(|_| {
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
        })?;
    let mut guard = CancelOnDrop {
        queue: state.queue.clone(),
        id,
        armed: true,
    };
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
