//! Request bodies: JSON parsed with the path of the offending field reported (`steps`,
//! `init_images[0]`, `body` for the body as a whole), and the size limit's rejection as JSON.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

pub type Body = Result<Bytes, BytesRejection>;

pub fn parse_json<T: DeserializeOwned>(body: Body) -> ApiResult<T> {
    let bytes =
        body.map_err(|r| ApiError::new(r.status(), "invalid_body", r.body_text()).field("body"))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::unprocessable("body", format!("body is not valid JSON: {e}")))?;
    if !json.is_object() {
        return Err(ApiError::unprocessable(
            "body",
            "body must be a JSON object",
        ));
    }
    let value = serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.contains('?') {
            "body".to_string()
        } else {
            path
        };
        ApiError::unprocessable(&field, format!("{field}: {}", e.inner()))
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::GenerationRequest;

    fn field(json: &str) -> String {
        let body: Body = Ok(Bytes::from(json.to_string()));
        parse_json::<GenerationRequest>(body)
            .err()
            .unwrap()
            .field
            .unwrap()
    }

    #[test]
    fn names_the_field() {
        assert_eq!(field(r#"{"steps": "many"}"#), "steps");
        assert_eq!(field(r#"{"width": 1.5}"#), "width");
        assert_eq!(field(r#"{"init_images": ["a", 3]}"#), "init_images[1]");
        assert_eq!(field(r#"{"prompt": "x""#), "body");
        assert_eq!(field("[]"), "body");
        assert_eq!(field("{} x"), "body");
        let ok: GenerationRequest = parse_json(Ok(Bytes::from("{}"))).unwrap();
        assert!(ok.prompt.is_none());
    }
}
