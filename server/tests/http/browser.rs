//! The web page in headless Chromium through chromedriver's WebDriver HTTP API: fill the prompt,
//! generate, see the image in the gallery, then drop that PNG and see its parameters read back.
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

#[test]
fn web_page_generates_into_the_gallery_and_reads_dropped_pngs() {
    let (Some(driver), Some(browser)) = (find("chromedriver"), find("chromium")) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but chromium / chromedriver are missing (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    };
    let server = start(config());
    let d = Driver::start(driver, browser);
    d.call("POST", "/url", json!({"url": format!("{}/", server.url())}));
    d.wait_js(
        30,
        "the model list",
        "return document.querySelector('#model').options.length",
    );
    d.type_into("#prompt", "a blue square on a yellow background");
    d.type_into("#steps", "3");
    d.type_into("#seed", "7");
    d.click("#generate");
    d.wait_js(
        60,
        "an image in the gallery",
        "return document.querySelectorAll('#gallery figure img').length",
    );
    let caption = d.js("return document.querySelector('#gallery figcaption').textContent");
    let caption = caption.as_str().unwrap();
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
}
