//! The web page in headless Chromium through chromedriver's WebDriver HTTP API: fill the prompt,
//! generate, see the image in the gallery, then drop that PNG and see its parameters read back;
//! on the chat tab, talk to the bundled chat model over two turns with streamed replies.
//! Skipped (with a message) when chromium or chromedriver is missing, except under CI=true, where
//! CI installs them and their absence is a failure.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::common::*;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file())
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
    http: Client,
    session: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(s) = &self.session {
            let _ = self.http.delete(format!("{}/session/{s}", self.url)).send();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(driver: PathBuf, browser: PathBuf) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut d = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            session: None,
        };
        wait_for(30, "chromedriver to listen", || {
            d.http
                .get(format!("{}/status", d.url))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true)
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,900"],
            },
        }}});
        let v = d.call("POST", "/session", caps);
        d.session = Some(v["sessionId"].as_str().expect("a session").to_string());
        d
    }

    /// A WebDriver command; returns its `value`.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = match &self.session {
            Some(s) => format!("/session/{s}{path}"),
            None => path.to_string(),
        };
        let url = format!("{}{path}", self.url);
        let r = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = r.send().unwrap().json().unwrap();
        assert!(v["value"].get("error").is_none(), "WebDriver {path}: {v}");
        v["value"].clone()
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/clear"), json!({}));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            json!({"text": text}),
        );
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/click"), json!({}));
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    /// The caption of the newest image in the gallery.
    fn first_caption(&self) -> String {
        let caption = self.js("return document.querySelector('#gallery figcaption').textContent");
        caption.as_str().unwrap().to_string()
    }

    /// Clicks Generate and waits for an image in the (empty) gallery: its caption.
    fn generate_first(&self) -> String {
        self.click("#generate");
        self.wait_js(
            60,
            "an image in the gallery",
            "return document.querySelectorAll('#gallery figure img').length",
        );
        self.first_caption()
    }

    fn wait_js(&self, secs: u64, what: &str, script: &str) -> Value {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == false || v == 0) {
                return v;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// chromedriver and chromium, or None (test skipped) outside CI when either is missing.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let (Some(driver), Some(browser)) = (find("chromedriver"), find("chromium")) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but chromium / chromedriver are missing (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipped: chromium and chromedriver are not installed");
        return None;
    };
    Some((driver, browser))
}

/// The page of a server started with `config` in a browser, once `ready` (a script) holds; None
/// (the test skipped) where there is no browser.
fn open_page(
    config: kiln_server::ServerConfig,
    what: &str,
    ready: &str,
) -> Option<(kiln_server::Server, Driver)> {
    let (driver, browser) = browser()?;
    let server = start(config);
    let d = Driver::start(driver, browser);
    d.call("POST", "/url", json!({"url": format!("{}/", server.url())}));
    d.wait_js(30, what, ready);
    Some((server, d))
}

/// Fills the image form, generates, and checks the image and its caption in the gallery.
fn generate_into_gallery(d: &Driver) {
    d.type_into("#prompt", "a blue square on a yellow background");
    d.type_into("#steps", "3");
    d.type_into("#seed", "7");
    let caption = d.generate_first();
    assert!(
        caption.starts_with("a blue square on a yellow background\nSteps: 3,"),
        "{caption}"
    );
    assert!(
        caption.contains("Seed: 7") && caption.contains("Size: 64x64"),
        "{caption}"
    );
    let src = d.js("return document.querySelector('#gallery img').src");
    assert!(src.as_str().unwrap().starts_with("data:image/png;base64,"));
    // The live progress saw the job end.
    d.wait_js(
        10,
        "the status",
        "return document.querySelector('#status').textContent === 'done'",
    );
}

#[test]
fn web_page_generates_into_the_gallery_and_reads_dropped_pngs() {
    let Some((_server, d)) = open_page(
        config(),
        "the model list",
        "return document.querySelector('#model').options.length",
    ) else {
        return;
    };
    generate_into_gallery(&d);

    // Drop the generated PNG onto the page: its parameters come back into the form.
    d.type_into("#prompt", "something else");
    d.type_into("#steps", "20");
    d.js(
        "const b64 = document.querySelector('#gallery img').src.split(',')[1];
         const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
         const dt = new DataTransfer();
         dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
         document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
         return true;",
    );
    d.wait_js(
        30,
        "the dropped PNG's prompt",
        "return document.querySelector('#prompt').value.startsWith('a blue square')",
    );
    assert_eq!(d.js("return document.querySelector('#steps').value"), "3");
    assert_eq!(d.js("return document.querySelector('#seed').value"), "7");

    xyz_plot_into_gallery(&d);
    hires_fix_into_gallery(&d);
}

/// The hires-fix section: 64 px at x1.5 with one second-pass step gives a 96-pixel image whose
/// infotext carries A1111's hires fields.
fn hires_fix_into_gallery(d: &Driver) {
    // Back to a plain generation: every plot axis to Nothing.
    d.js(
        "for (const a of ['x', 'y', 'z']) document.querySelector(`#xyz-${a}-type`).value = '0';
          return true;",
    );
    d.click("#hires summary");
    d.click("#hr-enable");
    d.type_into("#hr-scale", "1.5");
    d.type_into("#hr-steps", "1");
    let upscalers =
        d.js("return [...document.querySelector('#hr-upscaler').options].map(o => o.value)");
    assert!(
        upscalers.to_string().contains("Latent (bicubic)")
            && upscalers.to_string().contains("Lanczos"),
        "{upscalers}"
    );
    let before = d.js("return document.querySelectorAll('#gallery figure').length");
    d.click("#generate");
    let newer = format!(
        "return document.querySelectorAll('#gallery figure').length > {before}
           && document.querySelector('#gallery img').naturalWidth"
    );
    let width = d.wait_js(60, "the hires image in the gallery", &newer);
    assert_eq!(width, 96, "hires width");
    let caption = d.first_caption();
    assert!(
        caption.contains("Size: 64x64")
            && caption.contains("Hires upscale: 1.5, Hires steps: 1, Hires upscaler: Latent"),
        "{caption}"
    );
    d.click("#hr-enable");
}

/// The ControlNet section: a control image picked through the file input and a model from
/// /controlnet/model_list go out as an `alwayson_scripts.controlnet` unit (the tiny SD1 pipeline
/// and its ControlNet fixtures), and the image's infotext names the unit.
#[test]
fn web_page_runs_a_controlnet_unit() {
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut c =
        kiln_server::ServerConfig::new(kiln_server::ModelSet::Single(fixtures.join("tiny-sd1")));
    c.device = kiln_runtime::DeviceChoice::Cpu;
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.controlnet_dir = Some(fixtures.join("controlnet"));
    let Some((_server, d)) = open_page(
        c,
        "the ControlNet model list",
        "return document.querySelector('#cn-model').options.length > 1",
    ) else {
        return;
    };
    d.click("#controlnet summary");
    d.js("const s = document.querySelector('#cn-model');
          s.value = [...s.options].find(o => o.value.startsWith('sd1-a [')).value; return true;");
    let input = d.element("#cn-image");
    let png = fixtures
        .join("controlnet/control.png")
        .canonicalize()
        .unwrap();
    d.call(
        "POST",
        &format!("/element/{input}/value"),
        json!({"text": png.to_str().unwrap()}),
    );
    d.wait_js(10, "the control image read", "return controlImage !== null");
    d.type_into("#width", "32");
    d.type_into("#height", "32");
    d.type_into("#steps", "2");
    let caption = d.generate_first();
    assert!(
        caption.contains("ControlNet 0: ") && caption.contains("sd1-a"),
        "{caption}"
    );
}

/// The X/Y/Z plot section: Steps 1,2 on X and CFG Scale 3,5 on Y give one labelled grid of 2x2
/// 64-pixel cells (a 48-pixel label column on the left, a label row on top) in the gallery.
fn xyz_plot_into_gallery(d: &Driver) {
    let before = d.js("return document.querySelectorAll('#gallery figure').length");
    d.click("#xyz summary");
    d.js("document.querySelector('#xyz-x-type').value = '4';
          document.querySelector('#xyz-y-type').value = '6'; return true;");
    d.type_into("#xyz-x-values", "1,2");
    d.type_into("#xyz-y-values", "3, 5");
    d.click("#generate");
    let count = format!(
        "return document.querySelectorAll('#gallery figure').length > {before}
           && document.querySelector('#gallery img').naturalWidth"
    );
    let width = d.wait_js(60, "the grid in the gallery", &count);
    assert_eq!(width, 48 + 2 * 64, "grid width");
    let height = d.js("return document.querySelector('#gallery img').naturalHeight");
    let height = height.as_u64().unwrap();
    assert!(
        height > 2 * 64 && height < 2 * 64 + 40,
        "grid height {height}"
    );
    let caption = d.first_caption();
    assert!(
        caption.contains("Script: X/Y/Z plot, X Type: Steps, X Values: \"1,2\"")
            && caption.contains("Y Type: CFG Scale"),
        "{caption}"
    );
    // Only the grid was added (the cells are not asked for).
    assert_eq!(
        d.js("return document.querySelectorAll('#gallery figure').length"),
        before.as_u64().unwrap() + 1
    );
}

/// Records what the page sends to /v1/chat/completions (`window.sent`) and every text the last
/// assistant message shows (`window.seen`). The reply's bytes are handed to the page a few at a
/// time, `window.delay` ms apart, so SSE lines arrive split across reads and the page must render
/// each token as it comes: a page that waited for the whole answer would show no partial text.
/// Aborting the request errors the slowed body at once, as aborting a plain fetch does.
const INSTRUMENT: &str = r##"
window.sent = [];
window.seen = [];
window.delay = 1;
const realFetch = window.fetch;
window.fetch = async (url, init) => {
  const chat = url === "/v1/chat/completions";
  if (chat) window.sent.push(JSON.parse(init.body));
  const res = await realFetch(url, init);
  if (!chat || !res.ok) return res;
  const reader = res.body.getReader();
  const body = new ReadableStream({
    start(c) { init.signal.addEventListener("abort", () => { try { c.error(init.signal.reason); } catch (e) {} }); },
    async pull(c) {
      const { done, value } = await reader.read();
      if (done) { c.close(); return; }
      for (let i = 0; i < value.length; i += 7) {
        c.enqueue(value.slice(i, i + 7));
        await new Promise((r) => setTimeout(r, window.delay));
      }
    },
  });
  return new Response(body, { status: res.status, headers: res.headers });
};
new MutationObserver(() => {
  const m = document.querySelectorAll("#chat-log .msg.assistant");
  if (m.length) window.seen.push(m[m.length - 1].firstChild ? m[m.length - 1].firstChild.textContent : "");
}).observe(document.querySelector("#chat-log"), { subtree: true, childList: true, characterData: true });
return true;
"##;

/// Sends `text` from the chat box and waits for reply number `n` (1-based) to finish streaming.
fn chat_turn(d: &Driver, text: &str, n: usize) -> String {
    d.js("window.seen = []; return true;");
    d.type_into("#chat-input", text);
    d.click("#chat-send");
    d.wait_js(
        60,
        "the streamed reply",
        &format!(
            "const m = document.querySelectorAll('#chat-log .msg.assistant');
             return m.length === {n} && !m[{n} - 1].classList.contains('streaming')
                 && !document.querySelector('#chat-send').disabled"
        ),
    );
    assert_eq!(
        d.js("return document.querySelector('#chat-error').textContent"),
        ""
    );
    d.js(&format!(
        "return document.querySelectorAll('#chat-log .msg.assistant')[{n} - 1].textContent"
    ))
    .as_str()
    .unwrap()
    .to_string()
}

#[test]
fn web_page_chats_with_streamed_replies_and_keeps_the_conversation() {
    let Some((_server, d)) = open_page(
        both_config(),
        "the chat model list",
        "return document.querySelector('#chat-model').options.length",
    ) else {
        return;
    };
    // Each picker lists its own kind of model.
    let names =
        "(id) => [...document.querySelector(id).options].map((o) => o.value.split(' [')[0])";
    assert_eq!(
        d.js(&format!("return ({names})('#chat-model')")),
        json!(["llm/bundled"])
    );
    assert_eq!(
        d.js(&format!("return ({names})('#model')")),
        json!(["bundled"])
    );

    d.click("#tab-chat");
    assert_eq!(
        d.js("return [document.querySelector('#image-tab').hidden, document.querySelector('#chat-tab').hidden]"),
        json!([true, false])
    );
    d.js(INSTRUMENT);
    d.type_into("#chat-system", "Be brief.");
    d.type_into("#chat-temperature", "0");
    d.type_into("#chat-seed", "3");

    assert_eq!(chat_turn(&d, "What is 7 plus 5?", 1), "7 plus 5 is 12.");
    // The reply was shown as it streamed: some shorter prefix of it appeared first.
    let seen = d.js("return window.seen");
    let partial = seen.as_array().unwrap().iter().any(|s| {
        let s = s.as_str().unwrap();
        !s.is_empty() && s.len() < "7 plus 5 is 12.".len() && "7 plus 5 is 12.".starts_with(s)
    });
    assert!(partial, "no partial reply was rendered: {seen}");

    assert_eq!(chat_turn(&d, "What is 2 plus 3?", 2), "2 plus 3 is 5.");
    let sent = d.js("return window.sent");
    assert_eq!(sent.as_array().unwrap().len(), 2, "{sent}");
    let first = &sent[0];
    assert_eq!(first["model"], "llm/bundled");
    assert_eq!(first["stream"], true);
    assert_eq!(first["temperature"], 0);
    assert_eq!(first["seed"], 3);
    assert!(first.get("max_tokens").is_none(), "{first}");
    // The second turn carried the whole conversation.
    assert_eq!(
        sent[1]["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 7 plus 5?"},
            {"role": "assistant", "content": "7 plus 5 is 12."},
            {"role": "user", "content": "What is 2 plus 3?"},
        ])
    );
    let log = d.js(
        "return [...document.querySelectorAll('#chat-log .msg')].map((m) => m.className + ': ' + m.textContent)",
    );
    assert_eq!(
        log,
        json!([
            "msg user: What is 7 plus 5?",
            "msg assistant: 7 plus 5 is 12.",
            "msg user: What is 2 plus 3?",
            "msg assistant: 2 plus 3 is 5.",
        ])
    );

    // Stop cuts a (slowed) reply off where it got to; that part stays in the conversation.
    d.js("window.delay = 40; return true;");
    d.type_into("#chat-input", "What is 12 plus 2?");
    d.click("#chat-send");
    let partial = d.wait_js(
        60,
        "the first token",
        "const m = document.querySelectorAll('#chat-log .msg.assistant')[2];
         return m && m.textContent || null",
    );
    d.click("#chat-stop");
    d.wait_js(
        10,
        "the stopped reply",
        "return !document.querySelector('#chat-send').disabled",
    );
    let kept = d.js(
        "return document.querySelectorAll('#chat-log .msg.assistant')[2].firstChild.textContent",
    );
    assert!(
        kept.as_str()
            .unwrap()
            .starts_with(partial.as_str().unwrap()),
        "{kept} after {partial}"
    );
    assert!(
        !kept.as_str().unwrap().ends_with('.'),
        "not cut off: {kept}"
    );
    assert_eq!(
        d.js("return document.querySelectorAll('#chat-log .msg.assistant')[2].querySelector('.note').textContent"),
        "(stopped)"
    );
    assert_eq!(
        d.js("return document.querySelector('#chat-error').textContent"),
        ""
    );
    d.js("window.delay = 1; return true;");

    // A refused request shows the server's message and leaves the conversation as it was.
    d.type_into("#chat-max-tokens", "1000000");
    d.type_into("#chat-input", "What is 1 plus 1?");
    d.click("#chat-send");
    let error = d.wait_js(
        30,
        "the error message",
        "return document.querySelector('#chat-error').textContent || null",
    );
    let error = error.as_str().unwrap();
    assert!(
        error.starts_with("400: ") && error.contains("max_tokens"),
        "{error}"
    );
    assert_eq!(
        d.js("return document.querySelectorAll('#chat-log .msg.assistant').length"),
        3
    );
    // It was sent with the stopped turn's partial reply as history.
    let sent = d.js("return window.sent");
    assert_eq!(sent.as_array().unwrap().len(), 4, "{sent}");
    assert_eq!(
        sent[3]["messages"].as_array().unwrap()[5..],
        [
            json!({"role": "user", "content": "What is 12 plus 2?"}),
            json!({"role": "assistant", "content": kept}),
            json!({"role": "user", "content": "What is 1 plus 1?"}),
        ]
    );

    // Clear starts a new conversation: the next request carries only its own turn.
    d.type_into("#chat-max-tokens", "");
    d.click("#chat-clear");
    assert_eq!(
        d.js("return document.querySelectorAll('#chat-log .msg').length + document.querySelector('#chat-error').textContent"),
        "0"
    );
    assert_eq!(chat_turn(&d, "What is 3 times 4?", 1), "3 times 4 is 12.");
    let sent = d.js("return window.sent");
    assert_eq!(
        sent[4]["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 3 times 4?"},
        ])
    );

    // The image tab still works beside the chat one.
    d.click("#tab-image");
    assert_eq!(
        d.js("return [document.querySelector('#image-tab').hidden, document.querySelector('#chat-tab').hidden]"),
        json!([false, true])
    );
    generate_into_gallery(&d);
}

/// Images attached on the chat tab (the file input, a drop, refusing other files) show as
/// thumbnails and go with the text as OpenAI `image_url` parts holding data URLs; the bundled
/// model has no vision encoder, so the server decodes them and answers its 400, which the page
/// shows. The attachments are cleared on sending, and a text turn afterwards is sent clean.
#[test]
fn web_page_sends_attached_images_as_image_url_parts() {
    let Some((_server, d)) = open_page(
        both_config(),
        "the chat model list",
        "return document.querySelector('#chat-model').options.length",
    ) else {
        return;
    };
    d.click("#tab-chat");
    d.js(INSTRUMENT);
    d.type_into("#chat-temperature", "0");

    // A PNG through the file input, as a user picking a file.
    let png = {
        let img =
            image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([x as u8 * 10, y as u8 * 15, 200]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let path = std::env::temp_dir().join(format!("kiln-attach-{}.png", std::process::id()));
    std::fs::write(&path, &png).unwrap();
    let input = d.element("#chat-image");
    d.call(
        "POST",
        &format!("/element/{input}/value"),
        json!({"text": path.to_str().unwrap()}),
    );
    d.wait_js(
        10,
        "the PNG's thumbnail",
        "return document.querySelectorAll('#chat-attachments img').length === 1",
    );
    let _ = std::fs::remove_file(&path);
    // A WebP drawn by the page and a text file, dropped on the chat tab: the text file is refused.
    d.js(
        "const c = document.createElement('canvas');
         c.width = 8; c.height = 8;
         c.getContext('2d').fillRect(0, 0, 4, 4);
         c.toBlob((webp) => {
           const dt = new DataTransfer();
           dt.items.add(new File([webp], 'drawn.webp', {type: 'image/webp'}));
           dt.items.add(new File(['hello'], 'notes.txt', {type: 'text/plain'}));
           document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
         }, 'image/webp');
         return true;",
    );
    d.wait_js(
        10,
        "the WebP's thumbnail",
        "return document.querySelectorAll('#chat-attachments img').length === 2",
    );
    let refused = d.js("return document.querySelector('#chat-error').textContent");
    assert!(refused.as_str().unwrap().contains("notes.txt"), "{refused}");
    // A third image, removed again with its button.
    d.js(
        "const dt = new DataTransfer();
         dt.items.add(new File([Uint8Array.from(atob(document.querySelector('#chat-attachments img').src.split(',')[1]), (c) => c.charCodeAt(0))], 'again.png', {type: 'image/png'}));
         document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
         return true;",
    );
    d.wait_js(
        10,
        "a third thumbnail",
        "return document.querySelectorAll('#chat-attachments img').length === 3",
    );
    d.click("#chat-attachments .thumb:nth-child(3) button");
    assert_eq!(
        d.js("return document.querySelectorAll('#chat-attachments img').length"),
        2
    );

    d.type_into("#chat-input", "What is in this picture?");
    d.click("#chat-send");
    let error = d.wait_js(
        30,
        "the server's refusal",
        "return !document.querySelector('#chat-send').disabled
             && document.querySelector('#chat-error').textContent || null",
    );
    let error = error.as_str().unwrap();
    assert!(
        error.starts_with("400: messages[0].content[1]: model llm/bundled has no vision encoder"),
        "{error}"
    );
    // Sent in OpenAI's shape: the text part, then each image as a data URL, in order.
    let sent = d.js("return window.sent");
    let messages = &sent[0]["messages"];
    assert_eq!(messages.as_array().unwrap().len(), 1, "{sent}");
    let content = &messages[0]["content"];
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(
        content[0],
        json!({"type": "text", "text": "What is in this picture?"})
    );
    assert_eq!(
        content[1],
        json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", b64encode(&png))}})
    );
    assert_eq!(content[2]["type"], "image_url");
    let webp = content[2]["image_url"]["url"].as_str().unwrap();
    assert!(webp.starts_with("data:image/webp;base64,UklGR"), "{webp}");
    assert_eq!(content.as_array().unwrap().len(), 3, "{content}");
    // The transcript shows the images with the text; the attachments were cleared.
    assert_eq!(
        d.js("const m = document.querySelector('#chat-log .msg.user');
              return [m.querySelectorAll('img').length, m.textContent, m.classList.contains('failed')]"),
        json!([2, "What is in this picture?", true])
    );
    assert_eq!(
        d.js("return document.querySelectorAll('#chat-attachments img').length"),
        0
    );

    // The refused turn left the conversation: the next one goes as plain text, alone.
    assert_eq!(chat_turn(&d, "What is 7 plus 5?", 1), "7 plus 5 is 12.");
    let sent = d.js("return window.sent");
    assert_eq!(
        sent[1]["messages"],
        json!([{"role": "user", "content": "What is 7 plus 5?"}])
    );
}
