//! Scale-out: two replicas behind a real nginx (least_conn), as docs/DEPLOY.md describes. Chat
//! completions, a streamed chat and txt2img go through nginx; each replica's /metrics must show
//! it served chat, and the counts across both must add up to what was sent.
//! Skipped (with a message) when nginx is missing, except under CI=true, where CI installs it and
//! its absence is a failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_server::Server;
use serde_json::{json, Value};

use crate::common::*;

/// nginx is often in an sbin folder that a normal user's PATH lacks.
fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|d| Path::new(d).join("nginx"))
        .find(|p| p.is_file());
    found
}

/// The config of docs/DEPLOY.md, with every file nginx writes kept in `dir`.
fn nginx_conf(dir: &Path, port: u16, replicas: &[&Server]) -> String {
    let d = dir.display();
    let servers: String = replicas
        .iter()
        .map(|s| {
            format!(
                "        server {} max_fails=3 fail_timeout=10s;\n",
                s.addr()
            )
        })
        .collect();
    format!(
        "worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream kiln {{
        least_conn;
{servers}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        location / {{
            proxy_pass http://kiln;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_connect_timeout 5s;
            proxy_read_timeout 600s;
            proxy_send_timeout 600s;
            proxy_next_upstream error http_503 non_idempotent;
            proxy_next_upstream_tries 2;
        }}
    }}
}}
"
    )
}

/// nginx with everything in `dir`. -e: nginx opens its error log before reading the config, and
/// would otherwise open /var/log/nginx/error.log.
fn nginx_command(program: &Path, dir: &Path) -> Command {
    let mut c = Command::new(program);
    c.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"));
    c
}

/// nginx in the foreground with its own prefix folder, stopped (and the folder removed) when
/// dropped.
struct Nginx {
    child: Child,
    program: PathBuf,
    dir: PathBuf,
    url: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `-s stop` sends the master SIGTERM, and it takes its workers down with it; SIGKILL would
        // leave the workers running, orphaned.
        let stopped = self
            .command()
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if stopped {
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Nginx {
    fn start(program: &Path, replicas: &[&Server]) -> Nginx {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("kiln-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("nginx.conf"), nginx_conf(&dir, port, replicas)).unwrap();
        let child = nginx_command(program, &dir)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut n = Nginx {
            child,
            program: program.to_path_buf(),
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let url = format!("{}/health", n.url);
        wait_for(30, "nginx to proxy /health", || {
            if let Ok(Some(status)) = n.child.try_wait() {
                let log = std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}): {log}");
            }
            client()
                .get(&url)
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        n
    }

    fn command(&self) -> Command {
        nginx_command(&self.program, &self.dir)
    }

    fn post(&self, path: &str, body: &Value) -> reqwest::blocking::Response {
        client()
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .unwrap()
    }
}

/// One sample of `kiln_requests_total` from a replica's own /metrics (not through nginx).
fn requests(server: &Server, api: &str) -> u64 {
    let text = get(server, "/metrics").text().unwrap();
    let name = format!("kiln_requests_total{{api=\"{api}\"}} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line[name.len()..].parse().unwrap()
}

fn question(a: u32, b: u32) -> Value {
    json!({
        "model": "llm/bundled",
        "messages": [{"role": "user", "content": format!("What is {a} plus {b}?")}],
        "temperature": 0,
    })
}

#[test]
fn two_replicas_behind_nginx_share_chat_and_image_requests() {
    let Some(program) = find_nginx() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but nginx is missing (apt-get install nginx)"
        );
        eprintln!("skipped: nginx is not installed");
        return;
    };
    let a = start(both_config());
    let b = start(both_config());
    let nginx = Nginx::start(&program, &[&a, &b]);

    // Eight chat completions at once: least_conn spreads them over both replicas.
    let sums = [
        (7, 5),
        (2, 3),
        (6, 1),
        (13, 15),
        (12, 2),
        (4, 13),
        (13, 0),
        (1, 2),
    ];
    std::thread::scope(|s| {
        let handles: Vec<_> = sums
            .iter()
            .map(|&(x, y)| {
                let nginx = &nginx;
                s.spawn(move || {
                    let r = nginx.post("/v1/chat/completions", &question(x, y));
                    assert_eq!(r.status(), 200);
                    let v: Value = r.json().unwrap();
                    let reply = v["choices"][0]["message"]["content"].as_str().unwrap();
                    assert_eq!(reply, format!("{x} plus {y} is {}.", x + y), "{v}");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });

    // A streamed reply passes through as Server-Sent Events, event by event.
    let mut streamed = question(7, 5);
    streamed["stream"] = json!(true);
    let r = nginx.post("/v1/chat/completions", &streamed);
    assert_eq!(r.status(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    let body = r.text().unwrap();
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, "7 plus 5 is 12.");
    assert!(events.len() > 3, "one event per token: {body}");

    for prompt in ["a red circle", "a blue square"] {
        let r = nginx.post("/sdapi/v1/txt2img", &small(prompt, 2));
        assert_eq!(r.status(), 200);
        let v: Value = r.json().unwrap();
        assert!(b64decode(v["images"][0].as_str().unwrap()).starts_with(b"\x89PNG"));
    }

    // Each replica served chat, and none was lost or counted twice.
    let (chat_a, chat_b) = (requests(&a, "chat"), requests(&b, "chat"));
    assert!(
        chat_a > 0 && chat_b > 0,
        "chat requests: {chat_a} and {chat_b}"
    );
    assert_eq!(chat_a + chat_b, 9);
    assert_eq!(requests(&a, "image") + requests(&b, "image"), 2);
}
