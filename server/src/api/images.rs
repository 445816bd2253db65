//! Images in requests and responses: base64 with or without a `data:image/...;base64,` prefix.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use kiln_models::image::{decode_image, RgbImage};

use crate::error::{ApiError, ApiResult};

/// The bytes of a base64 field (`field` names it in errors).
pub fn decode_base64(text: &str, field: &str) -> ApiResult<Vec<u8>> {
    let data = match text.find(";base64,") {
        Some(i) if text.starts_with("data:") => &text[i + ";base64,".len()..],
        _ => text,
    };
    // Some clients wrap long base64 lines; whitespace is never part of the data.
    let clean: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if clean.is_empty() {
        return Err(ApiError::invalid(field, format!("{field} is empty")));
    }
    STANDARD
        .decode(clean.as_bytes())
        .map_err(|e| ApiError::invalid(field, format!("{field} is not valid base64: {e}")))
}

/// A base64 PNG, JPEG, BMP or WebP image as RGB.
pub fn decode_base64_image(text: &str, field: &str) -> ApiResult<RgbImage> {
    let bytes = decode_base64(text, field)?;
    decode_image(&bytes, field).map_err(|e| ApiError::invalid(field, e.to_string()))
}

pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_errors() {
        assert_eq!(decode_base64("aGk=", "f").unwrap(), b"hi");
        assert_eq!(
            decode_base64("data:image/png;base64,aGk=", "f").unwrap(),
            b"hi"
        );
        assert_eq!(decode_base64("aG\nk=", "f").unwrap(), b"hi");
        let e = decode_base64("not base64!", "init_images[0]").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("init_images[0]"));
        let e = decode_base64_image("aGk=", "mask").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("mask"));
        assert!(e.detail.contains("not a PNG"), "{}", e.detail);
    }
}
