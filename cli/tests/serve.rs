//! `kiln serve` as a process: it prints its address, answers HTTP there, and refuses bad start-up
//! arguments with a message and a non-zero exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn kiln() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env_remove("KILN_DEVICE").env_remove("KILN_API_KEY");
    cmd
}

/// A bare HTTP/1.1 GET; returns the whole answer.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serves_the_bundled_model_on_the_printed_address() {
    let (mut child, addr) = serve(&["--api-key", "k"]);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let health = http_get(&addr, "/health");
    let models = http_get(&addr, "/sdapi/v1/sd-models");
    let _ = child.kill();
    let _ = child.wait();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    assert!(models.starts_with("HTTP/1.1 401"), "{models}");
}

#[test]
fn bad_start_up_arguments_fail_clearly() {
    let out = kiln()
        .args(["serve", "-m", "/no/such/model", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/no/such/model") && err.contains("does not exist"),
        "{err}"
    );

    let out = kiln()
        .args(["serve", "--models-dir", "/no/such/dir", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("models folder"));

    // --mmproj goes with one GGUF text model, and must be a projector that fits it.
    let vision = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/llm/mistral3-vision"
    );
    let text = format!("{vision}/text-f32.gguf");
    for (model, mmproj, says) in [
        (
            vision.to_string(),
            format!("{vision}/mmproj-f32.gguf"),
            ["exactly one -m FILE.gguf", "GGUF"],
        ),
        (text.clone(), text.clone(), ["--mmproj", "clip"]),
    ] {
        let out = kiln()
            .args(["serve", "-m", &model, "--mmproj", &mmproj, "--port", "0"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(says.iter().all(|s| err.contains(s)), "{err}");
    }
}

/// Starts `kiln serve` on the CPU with these extra flags; the child and its address.
fn serve(extra: &[&str]) -> (std::process::Child, String) {
    let mut child = kiln()
        .args(["--device", "cpu", "serve", "--port", "0"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, addr)
}

/// A bare HTTP/1.1 POST of a JSON body; returns the whole answer.
fn http_post(addr: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A chat request whose user message carries these image URLs.
fn with_images(urls: &[&str]) -> String {
    let parts: Vec<String> = urls
        .iter()
        .map(|u| format!(r#"{{"type": "image_url", "image_url": {{"url": "{u}"}}}}"#))
        .collect();
    format!(
        r#"{{"messages": [{{"role": "user", "content": [{{"type": "text", "text": "Hi"}}, {}]}}]}}"#,
        parts.join(", ")
    )
}

#[test]
fn image_flags_reach_the_server() {
    let png = "data:image/png;base64,iVBORw0KGgo=";
    let (mut child, addr) = serve(&["--max-images", "1"]);
    let two = http_post(&addr, "/v1/chat/completions", &with_images(&[png, png]));
    let remote = http_post(
        &addr,
        "/v1/chat/completions",
        &with_images(&["http://127.0.0.1:9/a.png"]),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    assert!(
        two.contains("2 images") && two.contains("at most 1"),
        "{two}"
    );
    assert!(remote.contains("--allow-remote-images"), "{remote}");

    // Allowed, a URL that never answers runs into --remote-image-timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/a.png", silent.local_addr().unwrap());
    let (mut child, addr) = serve(&["--allow-remote-images", "--remote-image-timeout", "0.5"]);
    let slow = http_post(&addr, "/v1/chat/completions", &with_images(&[&url]));
    let _ = child.kill();
    let _ = child.wait();
    assert!(slow.starts_with("HTTP/1.1 400"), "{slow}");
    assert!(
        slow.contains("within 0.5 s") && slow.contains(&url),
        "{slow}"
    );

    let out = kiln()
        .args(["serve", "--remote-image-timeout", "0", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--remote-image-timeout"));
}

#[test]
fn serves_an_sdxl_folder() {
    let sdxl = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny-sdxl");
    let (mut child, addr) = serve(&["-m", sdxl]);
    let answer = http_post(
        &addr,
        "/sdapi/v1/txt2img",
        r#"{"prompt": "a red circle", "negative_prompt": "dark", "steps": 2, "seed": 5,
            "width": 48, "height": 32}"#,
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("Size: 48x32") && answer.contains("Model: tiny-sdxl"),
        "{answer}"
    );
}

/// A1111's `refiner_checkpoint` / `refiner_switch_at`: the refiner is a listed model (`-m` given
/// twice), named in the infotext; an unknown name or a switch outside (0, 1) is a 400 naming the
/// field.
#[test]
fn txt2img_takes_a1111s_refiner_fields() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let base = format!("{fixtures}/tiny-sdxl");
    let refiner = format!("{fixtures}/tiny-sdxl-refiner");
    let (mut child, addr) = serve(&["-m", &base, "-m", &refiner]);
    let body = |extra: &str| {
        format!(
            r#"{{"prompt": "a red circle", "negative_prompt": "dark", "steps": 4, "seed": 5,
                "width": 32, "height": 32, "override_settings": {{"sd_model_checkpoint":
                "tiny-sdxl"}}{extra}}}"#
        )
    };
    let ok = http_post(
        &addr,
        "/sdapi/v1/txt2img",
        &body(r#", "refiner_checkpoint": "tiny-sdxl-refiner", "refiner_switch_at": 0.5"#),
    );
    let unknown = http_post(
        &addr,
        "/sdapi/v1/txt2img",
        &body(r#", "refiner_checkpoint": "no-such-refiner""#),
    );
    let bad_switch = http_post(
        &addr,
        "/sdapi/v1/txt2img",
        &body(r#", "refiner_checkpoint": "tiny-sdxl-refiner", "refiner_switch_at": 1.5"#),
    );
    let none = http_post(
        &addr,
        "/sdapi/v1/txt2img",
        &body(r#", "refiner_checkpoint": "None""#),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains("Refiner: tiny-sdxl-refiner [") && ok.contains("Refiner switch at: 0.5"),
        "{ok}"
    );
    assert!(unknown.starts_with("HTTP/1.1 400"), "{unknown}");
    assert!(
        unknown.contains("refiner_checkpoint") && unknown.contains("no-such-refiner"),
        "{unknown}"
    );
    assert!(bad_switch.starts_with("HTTP/1.1 400"), "{bad_switch}");
    assert!(
        bad_switch.contains("refiner_switch_at") && bad_switch.contains("between 0 and 1"),
        "{bad_switch}"
    );
    assert!(none.starts_with("HTTP/1.1 200"), "{none}");
    assert!(!none.contains("Refiner:"), "{none}");
}
