//! Images in chat requests (OpenAI `image_url` parts): every bad part is a 400 naming it, remote
//! URLs are refused unless the server allows them, and then fetched within a size and a time
//! limit. The bundled model has no vision encoder, so a request whose images all arrived and
//! decoded ends in its "no vision encoder" 400: that answer is the proof the images were read,
//! and a fetch or decode failure is reported instead of it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use kiln_server::Server;
use serde_json::{json, Value};

use crate::common::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(20, 12, |x, y| image::Rgb([x as u8 * 12, y as u8 * 20, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn png() -> Vec<u8> {
    encoded(image::ImageFormat::Png)
}

fn data_url(media: &str, bytes: &[u8]) -> String {
    format!("data:{media};base64,{}", b64(bytes))
}

fn image_part(url: &str) -> Value {
    json!({"type": "image_url", "image_url": {"url": url}})
}

/// A user message: a question and these image parts (content[1..]).
fn asking(parts: Vec<Value>) -> Value {
    let mut content = vec![json!({"type": "text", "text": "What is 7 plus 5?"})];
    content.extend(parts);
    json!({"messages": [{"role": "user", "content": content}]})
}

/// POSTs a chat request and checks its 400: OpenAI's shape, `param` and a phrase of the message.
fn refused(server: &Server, body: &Value, param: &str, says: &[&str]) -> String {
    let (status, e) = post_raw(server, "/v1/chat/completions", &body.to_string());
    let short: String = body.to_string().chars().take(300).collect();
    assert_eq!(status, 400, "{short}: {e}");
    let error = &e["error"];
    assert_eq!(error["type"], "invalid_request_error", "{short}: {e}");
    assert_eq!(error["param"], param, "{short}: {e}");
    let message = error["message"].as_str().unwrap().to_string();
    for s in says {
        assert!(message.contains(s), "{short}: {message} (wanted {s:?})");
    }
    message
}

/// The answer of a request whose images were all read: the bundled model cannot see them.
const NO_VISION: &[&str] = &["model llm/bundled has no vision encoder"];

fn still_serving(server: &Server) {
    let (status, ok) = post_raw(
        server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "What is 7 plus 5?"}], "temperature": 0})
            .to_string(),
    );
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["choices"][0]["message"]["content"], "7 plus 5 is 12.");
}

#[test]
fn bad_image_parts_are_400s_naming_the_part() {
    let server = start(config(1));
    let at = "messages[0].content[1]";
    let png = png();
    let ok = data_url("image/png", &png);

    // Well-formed images in every accepted shape and format are read, then refused by the model.
    let bmp = data_url("image/png", &encoded(image::ImageFormat::Bmp));
    for part in [
        image_part(&ok),
        json!({"type": "image_url", "image_url": ok}),
        json!({"type": "image_url", "image_url": {"url": ok, "detail": "low"}}),
        image_part(&data_url("image/jpeg", &encoded(image::ImageFormat::Jpeg))),
        image_part(&data_url("image/webp", &encoded(image::ImageFormat::WebP))),
        // Labelled JPEG, holding a PNG: the bytes decide.
        image_part(&data_url("image/jpeg", &png)),
    ] {
        refused(&server, &asking(vec![part]), at, NO_VISION);
    }
    // The first image names the refusal; images only, no text, is a message too.
    refused(
        &server,
        &json!({"messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": [image_part(&ok), image_part(&ok)]},
        ]}),
        "messages[2].content[0]",
        NO_VISION,
    );

    let cases: Vec<(Value, &str, Vec<&str>)> = vec![
        (
            asking(vec![image_part("data:image/png;base64,%%%not base64%%%")]),
            at,
            vec![at, "not valid base64"],
        ),
        (
            asking(vec![image_part(&data_url(
                "image/png",
                b"hello, not an image",
            ))]),
            at,
            vec![at, "not a PNG, JPEG or WebP image"],
        ),
        (
            asking(vec![image_part(&data_url(
                "image/png",
                &png[..png.len() / 2],
            ))]),
            at,
            vec![at, "cannot decode"],
        ),
        (asking(vec![image_part(&bmp)]), at, vec![at, "Bmp"]),
        (
            asking(vec![image_part(&data_url("image/gif", &png))]),
            at,
            vec!["image/gif", "PNG, JPEG or WebP"],
        ),
        (
            asking(vec![image_part(&format!("data:image/png,{}", b64(&png)))]),
            at,
            vec!["base64"],
        ),
        (
            asking(vec![image_part("ftp://example.com/cat.png")]),
            at,
            vec!["ftp://example.com/cat.png"],
        ),
        (
            asking(vec![image_part("/tmp/cat.png")]),
            at,
            vec!["/tmp/cat.png"],
        ),
        (
            asking(vec![json!({"type": "image_url"})]),
            at,
            vec!["image_url"],
        ),
        (
            asking(vec![
                json!({"type": "image_url", "image_url": {"detail": "low"}}),
            ]),
            at,
            vec!["url"],
        ),
        (
            asking(vec![json!({"type": "image_url", "image_url": 7})]),
            at,
            vec!["image_url"],
        ),
        (
            asking(vec![
                json!({"type": "image_url", "image_url": {"url": ok, "detail": "huge"}}),
            ]),
            at,
            vec!["detail"],
        ),
        (
            asking(vec![
                json!({"type": "image_url", "image_url": {"url": ok, "crop": 1}}),
            ]),
            at,
            vec!["`crop`"],
        ),
        // Remote images are off unless the server was started to fetch them.
        (
            asking(vec![image_part("http://127.0.0.1:9/cat.png")]),
            at,
            vec![
                "remote images are off",
                "--allow-remote-images",
                "http://127.0.0.1:9/cat.png",
            ],
        ),
        (
            asking(vec![image_part("https://example.com/cat.png")]),
            at,
            vec!["remote images are off", "--allow-remote-images"],
        ),
        // Images belong to user messages.
        (
            json!({"messages": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": [{"type": "text", "text": "Look:"}, image_part(&ok)]},
            ]}),
            "messages[1].content[1]",
            vec!["only in user messages", "role is assistant"],
        ),
        (
            json!({"messages": [
                {"role": "system", "content": [image_part(&ok)]},
                {"role": "user", "content": "Hello"},
            ]}),
            "messages[0].content[0]",
            vec!["only in user messages", "role is system"],
        ),
        // More than --max-images (8), over all messages: the first part past the limit.
        (
            json!({"messages": [
                {"role": "user", "content": vec![image_part(&ok); 5]},
                {"role": "assistant", "content": "Five."},
                {"role": "user", "content": vec![image_part(&ok); 4]},
            ]}),
            "messages[2].content[3]",
            vec!["9 images", "at most 8", "--max-images"],
        ),
    ];
    for (body, param, says) in cases {
        refused(&server, &body, param, &says);
    }
    // An earlier image's fault is reported before a later one's, and before the model's.
    refused(
        &server,
        &asking(vec![
            image_part(&ok),
            image_part(&data_url("image/png", b"junk")),
            image_part("data:image/png;base64,@@"),
        ]),
        "messages[0].content[2]",
        &["not a PNG"],
    );
    still_serving(&server);
}

/// A tiny HTTP server for remote images: `/ok.png`, `/missing.png` (404), `/big.png` (too large
/// by Content-Length), `/endless.png` (no Content-Length, too large as it arrives),
/// `/slow.png` (answers after 3 s), `/text` (not an image). Counts the requests it got.
struct Images {
    url: String,
    hits: Arc<AtomicUsize>,
}

fn serve_images(png: Vec<u8>) -> Images {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let png = png.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || answer(stream, &png));
        }
    });
    Images { url, hits }
}

fn answer(mut stream: TcpStream, png: &[u8]) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let head = |status: &str, length: Option<usize>, kind: &str| {
        let length = length.map_or(String::new(), |n| format!("Content-Length: {n}\r\n"));
        format!("HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n{length}Connection: close\r\n\r\n")
    };
    let _ = match path.as_str() {
        "/ok.png" => stream
            .write_all(head("200 OK", Some(png.len()), "image/png").as_bytes())
            .and_then(|_| stream.write_all(png)),
        "/big.png" => stream.write_all(head("200 OK", Some(1 << 30), "image/png").as_bytes()),
        "/endless.png" => {
            let _ = stream.write_all(head("200 OK", None, "image/png").as_bytes());
            let chunk = vec![0u8; 4096];
            // Until the client hangs up (a few KB past its limit).
            for _ in 0..10_000 {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
            Ok(())
        }
        "/slow.png" => {
            std::thread::sleep(Duration::from_secs(3));
            stream
                .write_all(head("200 OK", Some(png.len()), "image/png").as_bytes())
                .and_then(|_| stream.write_all(png))
        }
        "/text" => stream
            .write_all(head("200 OK", Some(5), "text/plain").as_bytes())
            .and_then(|_| stream.write_all(b"hello")),
        _ => stream
            .write_all(head("404 Not Found", Some(9), "text/plain").as_bytes())
            .and_then(|_| stream.write_all(b"not found")),
    };
}

#[test]
fn remote_images_are_fetched_within_limits_when_allowed() {
    let png = png();
    let images = serve_images(png.clone());
    let mut c = config(1);
    c.chat_images.allow_remote = true;
    c.chat_images.remote_timeout = Duration::from_millis(1500);
    c.chat_images.remote_max_bytes = 64 << 10;
    c.chat_images.max_images = 2;
    let server = start(c);
    let at = "messages[0].content[1]";
    let url = |path: &str| format!("{}{path}", images.url);
    let ask = |path: &str| asking(vec![image_part(&url(path))]);

    // Fetched and decoded: only then does the model refuse it.
    let before = images.hits.load(Ordering::SeqCst);
    refused(&server, &ask("/ok.png"), at, NO_VISION);
    assert_eq!(images.hits.load(Ordering::SeqCst), before + 1);
    // Two fetched at once, with a data URL between them.
    refused(
        &server,
        &json!({"messages": [{"role": "user", "content": [
            image_part(&url("/ok.png")), image_part(&data_url("image/png", &png)),
        ]}]}),
        "messages[0].content[0]",
        NO_VISION,
    );

    let missing = url("/missing.png");
    refused(
        &server,
        &ask("/missing.png"),
        at,
        &[at, "cannot fetch", &missing, "404"],
    );
    refused(
        &server,
        &ask("/big.png"),
        at,
        &["cannot fetch", "larger than 65536 bytes"],
    );
    refused(
        &server,
        &ask("/endless.png"),
        at,
        &["cannot fetch", "larger than 65536 bytes"],
    );
    let started = std::time::Instant::now();
    refused(
        &server,
        &ask("/slow.png"),
        at,
        &["cannot fetch", "within 1.5 s", "--remote-image-timeout"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    refused(
        &server,
        &ask("/text"),
        at,
        &[at, &url("/text"), "not a PNG"],
    );
    // Nothing listens there.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/cat.png", l.local_addr().unwrap())
    };
    refused(
        &server,
        &asking(vec![image_part(&closed)]),
        at,
        &["cannot fetch", &closed],
    );
    // https is spoken (this server answers plain HTTP, so the TLS handshake fails).
    let https = images.url.replace("http://", "https://") + "/ok.png";
    refused(
        &server,
        &asking(vec![image_part(&https)]),
        at,
        &["cannot fetch", &https],
    );
    // --max-images counts remote images too, before fetching any.
    let before = images.hits.load(Ordering::SeqCst);
    refused(
        &server,
        &asking(vec![image_part(&url("/ok.png")); 3]),
        "messages[0].content[3]",
        &["3 images", "at most 2"],
    );
    assert_eq!(images.hits.load(Ordering::SeqCst), before);
    still_serving(&server);
}
