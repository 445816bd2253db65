//! Images in chat messages: OpenAI's `image_url` content parts, read in three stages so that
//! every cheap check runs before anything slow. [`part`] reads a part's shape (in `message`);
//! [`check`] counts the request's images against `--max-images` and refuses URLs the server may
//! not fetch; [`load`] then fetches remote images (async, with a size and a time limit) and
//! decodes every image off the async runtime. Each problem is a 400 whose `param` names the part,
//! `messages[i].content[j]`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use kiln_llm::vision::{decode_image, DecodedImage};
use serde_json::Value;

use crate::config::ChatImageSettings;
use crate::error::{ApiError, ApiResult};

/// One image part of a request, as sent.
pub struct ImagePart {
    /// `messages[i].content[j]`.
    pub at: String,
    /// The message it belongs to (`i`).
    pub message: usize,
    pub source: Source,
}

pub enum Source {
    /// A `data:image/...;base64,` URL: the base64 text.
    Data(String),
    /// An `http://` or `https://` URL.
    Remote(String),
}

/// The media types a data URL may name; the bytes are sniffed anyway, so a PNG labelled JPEG
/// still decodes.
const MEDIA_TYPES: &[&str] = &["image/png", "image/jpeg", "image/jpg", "image/webp"];

/// Reads an `image_url` part: `{"type": "image_url", "image_url": {"url", "detail"?}}`, or the
/// URL as a bare string as some clients send it. `detail` (auto / low / high) is accepted and
/// has no effect: the model sees each image at its own resolution.
pub fn part(at: &str, message: usize, part: &Value) -> ApiResult<ImagePart> {
    let bad = |msg: String| ApiError::invalid(at, format!("{at}: {msg}"));
    let url =
        match part.get("image_url") {
            Some(Value::String(url)) => url.as_str(),
            Some(Value::Object(o)) => {
                if let Some(k) = o.keys().find(|k| !["url", "detail"].contains(&k.as_str())) {
                    return Err(bad(format!(
                        "image_url field `{k}` is not supported by kiln"
                    )));
                }
                match o.get("detail") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(d)) if ["auto", "low", "high"].contains(&d.as_str()) => {}
                    Some(d) => return Err(bad(format!("detail {d} must be auto, low or high"))),
                }
                o.get("url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("image_url.url (a string) is required".into()))?
            }
            _ => return Err(bad(
                "an image_url part needs \"image_url\": {\"url\": \"data:image/png;base64,...\"}"
                    .into(),
            )),
        };
    let scheme = url
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    let source = match scheme.as_str() {
        "data" => Source::Data(data_url(url).map_err(bad)?.to_string()),
        "http" | "https" => Source::Remote(url.to_string()),
        _ => {
            return Err(bad(format!(
                "unsupported image URL {}: send a data:image/png;base64,... URL (or http(s) \
                 where the server allows remote images)",
                shorten(url)
            )))
        }
    };
    Ok(ImagePart {
        at: at.to_string(),
        message,
        source,
    })
}

/// The base64 text of `data:<media type>[;params];base64,<data>`.
fn data_url(url: &str) -> Result<&str, String> {
    let Some((header, data)) = url.split_once(',') else {
        return Err("a data URL needs a comma before its data".into());
    };
    let mut params = header["data:".len()..].split(';');
    let media = params
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err("a data URL must be base64 (data:image/png;base64,...)".into());
    }
    if !MEDIA_TYPES.contains(&media.as_str()) {
        let media = if media.is_empty() {
            "no media type"
        } else {
            &media
        };
        return Err(format!(
            "{media} is not supported: images are PNG, JPEG or WebP (image/png, image/jpeg, \
             image/webp)"
        ));
    }
    Ok(data)
}

/// The count against `--max-images`, and remote URLs against `--allow-remote-images`.
pub fn check(parts: &[ImagePart], settings: &ChatImageSettings) -> ApiResult<()> {
    if let Some(over) = parts.get(settings.max_images) {
        return Err(ApiError::invalid(
            &over.at,
            format!(
                "{}: this request has {} images; this server takes at most {} per request \
                 (--max-images)",
                over.at,
                parts.len(),
                settings.max_images
            ),
        ));
    }
    for p in parts {
        if let Source::Remote(url) = &p.source {
            if !settings.allow_remote {
                return Err(ApiError::invalid(
                    &p.at,
                    format!(
                        "{}: remote images are off on this server, so {} is not fetched; send \
                         the image as a data:image/...;base64 URL, or start kiln serve with \
                         --allow-remote-images",
                        p.at,
                        shorten(url)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Aborts the task when dropped: a request that fails or goes away stops its other fetches.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches and decodes every part, all at once; the images in the parts' order. The first
/// failing part (in request order) is the error.
pub async fn load(
    parts: Vec<ImagePart>,
    settings: &ChatImageSettings,
    client: &OnceLock<reqwest::Client>,
) -> ApiResult<Vec<Arc<DecodedImage>>> {
    let remote = parts.iter().any(|p| matches!(p.source, Source::Remote(_)));
    let client = if remote {
        Some(remote_client(client)?)
    } else {
        None
    };
    let tasks: Vec<AbortOnDrop<ApiResult<DecodedImage>>> = parts
        .into_iter()
        .map(|p| AbortOnDrop(tokio::spawn(load_one(p, settings.clone(), client.clone()))))
        .collect();
    let mut images = Vec::with_capacity(tasks.len());
    for mut task in tasks {
        let image = (&mut task.0)
            .await
            .map_err(|e| ApiError::internal(format!("an image task failed: {e}")))??;
        images.push(Arc::new(image));
    }
    Ok(images)
}

async fn load_one(
    part: ImagePart,
    settings: ChatImageSettings,
    client: Option<reqwest::Client>,
) -> ApiResult<DecodedImage> {
    let at = part.at;
    let (bytes, what) = match part.source {
        Source::Data(text) => (Bytes::Base64(text), at.clone()),
        Source::Remote(url) => {
            let client =
                client.ok_or_else(|| ApiError::internal("no client for a remote image"))?;
            let bytes = fetch(&client, &at, &url, &settings).await?;
            (Bytes::Raw(bytes), format!("{at} ({})", shorten(&url)))
        }
    };
    // Decoding a large JPEG takes a while: off the runtime's threads.
    tokio::task::spawn_blocking(move || decode(&at, &what, bytes))
        .await
        .map_err(|e| ApiError::internal(format!("image decoding failed: {e}")))?
}

enum Bytes {
    Base64(String),
    Raw(Vec<u8>),
}

/// `what` names the image in messages: the part, and the URL it came from.
fn decode(at: &str, what: &str, bytes: Bytes) -> ApiResult<DecodedImage> {
    let bytes = match bytes {
        Bytes::Raw(b) => b,
        Bytes::Base64(text) => base64_decode(&text).map_err(|e| {
            ApiError::invalid(at, format!("{at}: the data URL is not valid base64: {e}"))
        })?,
    };
    decode_image(&bytes, what).map_err(|e| {
        let msg = match e {
            kiln_runtime::Error::Shape { msg, .. } | kiln_runtime::Error::Limit { msg, .. } => msg,
            other => other.to_string(),
        };
        ApiError::invalid(at, msg)
    })
}

/// Standard base64, padding optional, line breaks and spaces (MIME-wrapped text) ignored.
fn base64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    if text.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        ENGINE.decode(compact)
    } else {
        ENGINE.decode(text)
    }
}

/// The process's TLS provider for reqwest (built with rustls but no provider of its own):
/// rustls on ring, unless something installed a provider already. Every reqwest client in the
/// process needs one, so [`crate::Server::start`] calls this, not just the image fetcher.
pub fn install_tls_provider() {
    // rustls deprecates ring for lacking post-quantum key exchange; aws-lc-rs, which has it,
    // is a much heavier C build. Fetching an image over classical TLS is fine.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server's client for remote images, made on first use.
fn remote_client(cell: &OnceLock<reqwest::Client>) -> ApiResult<reqwest::Client> {
    if let Some(client) = cell.get() {
        return Ok(client.clone());
    }
    install_tls_provider();
    let client = reqwest::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        // Images are fetched now and then: no idle connections kept.
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| ApiError::internal(format!("cannot make the image fetcher: {e}")))?;
    Ok(cell.get_or_init(|| client).clone())
}

/// GETs `url` within the time limit, refusing a body over the size limit by its
/// Content-Length or as it arrives.
async fn fetch(
    client: &reqwest::Client,
    at: &str,
    url: &str,
    settings: &ChatImageSettings,
) -> ApiResult<Vec<u8>> {
    let shown = shorten(url);
    let fail = |msg: String| ApiError::invalid(at, format!("{at}: cannot fetch {shown}: {msg}"));
    let max = settings.remote_max_bytes;
    let too_large = || {
        fail(format!(
            "the image is larger than {}, this server's limit",
            size(max)
        ))
    };
    let get = async {
        let mut response = client.get(url).send().await.map_err(|e| fail(reason(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        if response.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(reason(&e)))? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let limit = settings.remote_timeout;
    tokio::time::timeout(limit, get).await.unwrap_or_else(|_| {
        Err(fail(format!(
            "no complete answer within {} (--remote-image-timeout)",
            seconds(limit)
        )))
    })
}

/// A reqwest error and its causes, without the URL (the message names it once).
fn reason(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

/// A URL for an error message: a long one (a data URL) cut short.
fn shorten(url: &str) -> String {
    const MAX: usize = 200;
    if url.len() <= MAX {
        return url.to_string();
    }
    let mut end = MAX;
    while !url.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &url[..end])
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s} s")
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> ApiResult<ImagePart> {
        part("messages[0].content[1]", 0, &v)
    }

    fn err(v: Value) -> String {
        let e = read(v).err().expect("an error");
        assert_eq!(e.field.as_deref(), Some("messages[0].content[1]"));
        e.detail
    }

    #[test]
    fn parts_in_both_shapes() {
        let url = "data:image/png;base64,AAAA";
        for v in [
            json!({"type": "image_url", "image_url": {"url": url}}),
            json!({"type": "image_url", "image_url": {"url": url, "detail": "high"}}),
            json!({"type": "image_url", "image_url": url}),
            json!({"type": "image_url", "image_url": {"url": "DATA:Image/JPEG;BASE64,AAAA"}}),
        ] {
            let p = read(v).unwrap();
            assert!(matches!(p.source, Source::Data(ref d) if d == "AAAA"));
        }
        let p = read(json!({"type": "image_url", "image_url": "https://x.test/a.png"})).unwrap();
        assert!(matches!(p.source, Source::Remote(ref u) if u == "https://x.test/a.png"));
    }

    #[test]
    fn bad_parts_name_the_problem() {
        assert!(err(json!({"type": "image_url"})).contains("image_url"));
        assert!(err(json!({"type": "image_url", "image_url": {}})).contains("url"));
        assert!(
            err(json!({"type": "image_url", "image_url": {"url": "x", "size": 1}}))
                .contains("`size`")
        );
        assert!(
            err(json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,A", "detail": "max"}}))
                .contains("detail")
        );
        assert!(
            err(json!({"type": "image_url", "image_url": "file:///etc/passwd"}))
                .contains("file:///etc/passwd")
        );
        assert!(
            err(json!({"type": "image_url", "image_url": "data:image/gif;base64,AAAA"}))
                .contains("image/gif")
        );
        assert!(
            err(json!({"type": "image_url", "image_url": "data:image/png,AAAA"}))
                .contains("base64")
        );
        assert!(
            err(json!({"type": "image_url", "image_url": "data:image/png;base64"}))
                .contains("comma")
        );
    }

    #[test]
    fn base64_with_line_breaks_and_without_padding() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVs\r\nbG8").unwrap(), b"hello");
        assert!(base64_decode("aGVs*G8=").is_err());
    }

    #[test]
    fn counts_and_remote_urls_are_checked() {
        let p = |j: usize, remote: bool| ImagePart {
            at: format!("messages[0].content[{j}]"),
            message: 0,
            source: if remote {
                Source::Remote("http://x.test/a.png".into())
            } else {
                Source::Data(String::new())
            },
        };
        let mut s = ChatImageSettings {
            max_images: 2,
            ..ChatImageSettings::default()
        };
        assert!(check(&[p(0, false), p(1, false)], &s).is_ok());
        let e = check(&[p(0, false), p(1, false), p(2, false)], &s).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("messages[0].content[2]"));
        assert!(e.detail.contains("3 images") && e.detail.contains("at most 2"));
        let e = check(&[p(0, false), p(1, true)], &s).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("messages[0].content[1]"));
        assert!(e.detail.contains("--allow-remote-images"), "{}", e.detail);
        s.allow_remote = true;
        assert!(check(&[p(0, false), p(1, true)], &s).is_ok());
    }

    #[test]
    fn long_urls_are_cut_in_messages() {
        let long = format!("data:image/png;base64,{}", "A".repeat(1000));
        assert!(shorten(&long).len() < 210);
        assert_eq!(size(20 << 20), "20 MiB");
        assert_eq!(size(1000), "1000 bytes");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5 s");
        assert_eq!(seconds(Duration::from_secs(10)), "10 s");
    }
}
