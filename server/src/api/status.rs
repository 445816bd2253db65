//! GET /health, GET /sdapi/v1/progress, POST /sdapi/v1/interrupt and /sdapi/v1/skip.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::catalog::ModelKind;
use crate::error::ApiError;

/// Whether the server can take work, for a load balancer: 200 while the worker is alive, with
/// the models in memory (`loaded`, by kind; null before the first job of that kind), the models
/// on offer and the queue's state.
pub async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    let names = |kind| {
        state
            .catalog
            .list_kind(kind)
            .into_iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
    };
    let loaded = |kind| {
        let path = state.metrics.loaded(kind)?;
        state
            .catalog
            .list_kind(kind)
            .into_iter()
            .find(|m| m.path == path)
            .map(|m| m.name)
    };
    Json(json!({
        "status": "ok",
        "device": state.device_name,
        "loaded": {
            "image": loaded(ModelKind::Image),
            "llm": loaded(ModelKind::Llm),
        },
        "models": {
            "image": names(ModelKind::Image),
            "llm": names(ModelKind::Llm),
        },
        "slots": state.llms.settings().parallel,
        "queue": {
            "waiting": state.queue.waiting(),
            "running": state.queue.running().is_some(),
            "running_jobs": state.queue.running_count(),
            "capacity": state.config.queue_size,
        },
    }))
}

/// Prometheus text: requests, tokens, time to first token, decode speed, queue depth.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl axum::response::IntoResponse {
    let text = state
        .metrics
        .render(state.queue.waiting(), state.queue.running_count());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

#[derive(Deserialize)]
pub struct ProgressQuery {
    #[serde(default)]
    skip_current_image: bool,
}

pub async fn progress(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ProgressQuery>,
) -> Json<Value> {
    let s = state.progress.snapshot();
    let waiting = state.queue.waiting();
    let fraction = if s.total > 0 {
        s.step as f64 / s.total as f64
    } else {
        0.0
    };
    let elapsed = s.started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    // A1111: time so far scaled by what is left.
    let eta = if fraction > 0.0 {
        elapsed / fraction - elapsed
    } else {
        0.0
    };
    let image = if q.skip_current_image {
        None
    } else {
        s.job.and(s.preview)
    };
    Json(json!({
        "progress": fraction,
        "eta_relative": eta,
        "state": {
            "skipped": s.skipped,
            "interrupted": s.interrupted,
            "job": s.job.map(|j| format!("job {j}")).unwrap_or_default(),
            "job_count": waiting + usize::from(s.job.is_some()),
            "job_timestamp": s.job_timestamp,
            "job_no": s.job_no,
            "sampling_step": s.step,
            "sampling_steps": s.total,
        },
        "current_image": image,
        "textinfo": s.textinfo,
    }))
}

/// Stops the running job at its next step; it answers with what it has (A1111 answers `{}`).
pub async fn interrupt(State(state): State<Arc<AppState>>) -> Json<Value> {
    if let Some((_, control)) = state.queue.running() {
        control.interrupt();
    }
    Json(json!({}))
}

/// Ends the running job's current batch at its next step and goes on with the next batch.
pub async fn skip(State(state): State<Arc<AppState>>) -> Json<Value> {
    if let Some((_, control)) = state.queue.running() {
        control.skip();
    }
    Json(json!({}))
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}
