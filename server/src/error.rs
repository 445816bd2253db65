//! The API's error answer: a status and a JSON body naming what was wrong, e.g.
//! `{"error": "invalid_value", "field": "steps", "detail": "steps must be between 1 and 500"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A short machine-readable kind.
    pub error: &'static str,
    /// The request field at fault (`body` for the body as a whole), if any.
    pub field: Option<String>,
    pub detail: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            field: None,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 400: a value of the right type that kiln cannot use.
    pub fn invalid(field: &str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_value", detail).field(field)
    }

    /// 422: a body that does not parse, or a field of the wrong type (FastAPI's code, as A1111).
    pub fn unprocessable(field: &str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail).field(field)
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    /// Replaces the machine-readable kind (OpenAI's `code`, e.g. `context_length_exceeded`).
    pub fn code(mut self, code: &'static str) -> ApiError {
        self.error = code;
        self
    }

    pub fn field(mut self, field: &str) -> ApiError {
        self.field = Some(field.to_string());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.error,
            "field": self.field,
            "detail": self.detail,
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
