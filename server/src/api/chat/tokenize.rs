//! llama-server's `POST /tokenize` (`{"content", "add_special", "with_pieces"}` -> `{"tokens"}`)
//! and `POST /detokenize` (`{"tokens"}` -> `{"content"}`), on the chat model named by `model` or
//! the only one served.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::body::{parse_json, Body};
use super::super::jobs::resolve_kind;
use super::super::AppState;
use super::error::OpenAiResult;
use crate::catalog::ModelKind;
use crate::error::{ApiError, ApiResult};
use crate::llm_models::LlmInfo;

fn info(state: &AppState, model: Option<&str>) -> ApiResult<Arc<LlmInfo>> {
    let entry = match model.filter(|m| !m.is_empty()) {
        Some(name) => resolve_kind(state, name, "model", ModelKind::Llm)?,
        None => state
            .catalog
            .list_kind(ModelKind::Llm)
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::invalid("model", "this server has no chat model"))?,
    };
    state.llms.get(&entry)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    content: String,
    #[serde(default)]
    add_special: bool,
    #[serde(default)]
    with_pieces: bool,
    #[serde(default)]
    model: Option<String>,
}

pub async fn tokenize(State(state): State<Arc<AppState>>, body: Body) -> OpenAiResult<Json<Value>> {
    let req: TokenizeRequest = parse_json(body)?;
    let info = info(&state, req.model.as_deref())?;
    let t = &info.tokenizer;
    let mut ids: Vec<u32> = if req.add_special {
        t.bos_id().into_iter().collect()
    } else {
        Vec::new()
    };
    ids.extend(
        t.encode(&req.content)
            .map_err(|e| ApiError::invalid("content", e.to_string()))?,
    );
    let tokens: Vec<Value> = if req.with_pieces {
        ids.iter()
            .map(|&id| {
                let piece = t.decode(&[id], false).unwrap_or_default();
                json!({"id": id, "piece": piece})
            })
            .collect()
    } else {
        ids.iter().map(|&id| json!(id)).collect()
    };
    Ok(Json(json!({ "tokens": tokens })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    tokens: Vec<u32>,
    #[serde(default)]
    model: Option<String>,
}

pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> OpenAiResult<Json<Value>> {
    let req: DetokenizeRequest = parse_json(body)?;
    let info = info(&state, req.model.as_deref())?;
    let vocab = info.tokenizer.vocab_size();
    if let Some(bad) = req.tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::invalid(
            "tokens",
            format!("token {bad} is outside the vocabulary of {vocab}"),
        )
        .into());
    }
    let content = info
        .tokenizer
        .decode(&req.tokens, false)
        .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
    Ok(Json(json!({ "content": content })))
}
