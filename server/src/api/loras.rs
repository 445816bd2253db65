//! GET /sdapi/v1/loras (A1111's shape: name, alias, path, metadata) and the `<lora:NAME:WEIGHT>`
//! tags of a generation request read against `--lora-dir`, before the job is queued.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use kiln_models::lora::{prompt_tags, ActiveLora};
use kiln_models::pipeline::GenerationParams;
use serde_json::{json, Value};

use super::AppState;
use crate::error::{ApiError, ApiResult};

pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let Some(library) = state.loras.clone() else {
        return Ok(Json(json!([])));
    };
    let entries = tokio::task::spawn_blocking(move || library.entries())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let list = entries
        .into_iter()
        .map(|e| {
            json!({
                "name": e.name,
                "alias": e.alias,
                "path": e.path.to_string_lossy(),
                "metadata": e.metadata,
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// The LoRA files both prompts' tags name, read on a blocking thread; a name not in the folder
/// (or no folder) or a malformed tag is a 400 naming it.
pub async fn resolve(state: &AppState, params: &GenerationParams) -> ApiResult<Vec<ActiveLora>> {
    let (prompt, negative) = (params.prompt.clone(), params.negative_prompt.clone());
    let bad = |e: String| ApiError::invalid("prompt", e);
    let tags = prompt_tags(&prompt, &negative).map_err(|e| bad(e.to_string()))?;
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    let Some(library) = state.loras.clone() else {
        return Err(bad(format!(
            "the prompt names LoRA `{}`, but this server has no LoRA folder (kiln serve \
             --lora-dir DIR)",
            tags[0].name
        )));
    };
    tokio::task::spawn_blocking(move || library.resolve(&prompt, &negative))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| bad(e.to_string()))
}
