//! OpenAI's error body, `{"error": {"message", "type", "param", "code"}}`, for the OpenAI-style
//! routes: the official SDKs read `error.message`, and `param` names the field at fault.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::ApiError;

/// An [`ApiError`] answered in OpenAI's shape. A body the A1111 routes answer 422 (bad JSON, a
/// field of the wrong type) is a 400 here, as OpenAI answers it.
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> OpenAiError {
        OpenAiError(e)
    }
}

/// The `error` object (also sent as an event when a stream fails midway).
pub fn error_object(e: &ApiError) -> Value {
    let kind = match e.status.as_u16() {
        401 => "authentication_error",
        404 => "not_found_error",
        429 | 503 => "server_overloaded",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    json!({
        "message": e.detail,
        "type": kind,
        "param": e.field,
        "code": e.error,
    })
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut e = self.0;
        if e.status == StatusCode::UNPROCESSABLE_ENTITY {
            e.status = StatusCode::BAD_REQUEST;
        }
        let mut response =
            (e.status, axum::Json(json!({ "error": error_object(&e) }))).into_response();
        if let Some(secs) = e.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub type OpenAiResult<T> = Result<T, OpenAiError>;
