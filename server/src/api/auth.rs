//! `--api-key`: every route but /health needs `Authorization: Bearer KEY`, or HTTP Basic (A1111's
//! `--api-auth user:pass`) whose `user:password`, or password alone, is the key. A browser gets
//! a Basic challenge, so the web page works after a password prompt.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::AppState;
use crate::error::ApiError;

pub async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = state.config.api_key.as_deref() else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given.is_some_and(|g| authorized(g, key)) {
        return next.run(req).await;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this server needs an API key: send `Authorization: Bearer KEY` (or HTTP Basic)",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"kiln\""),
    );
    response
}

fn authorized(header: &str, key: &str) -> bool {
    let (scheme, value) = header.trim().split_once(' ').unwrap_or((header, ""));
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return constant_time_eq(value.as_bytes(), key.as_bytes());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = STANDARD.decode(value) else {
            return false;
        };
        let password = decoded
            .iter()
            .position(|&b| b == b':')
            .map(|i| &decoded[i + 1..])
            .unwrap_or(&[]);
        // Both comparisons always run, so timing does not tell which form nearly matched.
        let whole = constant_time_eq(&decoded, key.as_bytes());
        let pass = constant_time_eq(password, key.as_bytes());
        return whole | pass;
    }
    false
}

/// Compares without stopping at the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert!(authorized("Bearer k3y", "k3y"));
        assert!(authorized("bearer  k3y", "k3y"));
        assert!(!authorized("Bearer k3", "k3y"));
        assert!(!authorized("k3y", "k3y"));
        let basic = |s: &str| format!("Basic {}", STANDARD.encode(s));
        assert!(authorized(&basic("anyone:k3y"), "k3y"));
        assert!(authorized(&basic("user:pass"), "user:pass"));
        assert!(!authorized(&basic("user:wrong"), "k3y"));
        assert!(!authorized("Basic !!!", "k3y"));
    }
}
