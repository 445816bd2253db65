//! Starting servers and talking to them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use kiln_models::image::RgbImage;
use kiln_runtime::DeviceChoice;
use kiln_server::{ModelSet, Server, ServerConfig};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

pub fn bundled() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/bundled")
}

/// A config serving the bundled model on the CPU backend at a free port.
pub fn config() -> ServerConfig {
    let mut c = ServerConfig::new(ModelSet::Single(bundled()));
    c.device = DeviceChoice::Cpu;
    c.listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// The bundled arithmetic chat model (llm/bundled).
pub fn bundled_llm() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../llm/bundled")
}

/// A config serving both bundled models, as `kiln serve` does with no -m: the image model is
/// listed first (so it is the default) and the chat model is named `llm/bundled`.
pub fn both_config() -> ServerConfig {
    let mut c = config();
    c.models = ModelSet::List(vec![bundled(), bundled_llm()]);
    c
}

pub fn start(config: ServerConfig) -> Server {
    Server::start(config).expect("server starts")
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

pub fn get(server: &Server, path: &str) -> Response {
    client()
        .get(format!("{}{path}", server.url()))
        .send()
        .unwrap()
}

pub fn post(server: &Server, path: &str, body: &Value) -> Response {
    client()
        .post(format!("{}{path}", server.url()))
        .json(body)
        .send()
        .unwrap()
}

/// Status and JSON body.
pub fn post_json(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let r = post(server, path, body);
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

pub fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let r = get(server, path);
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// A small, quick txt2img request.
pub fn small(prompt: &str, steps: u32) -> Value {
    json!({"prompt": prompt, "width": 64, "height": 64, "steps": steps, "seed": 42, "cfg_scale": 5})
}

pub fn b64decode(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

pub fn b64encode(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// The running job's sampling step (0 when idle).
pub fn step(server: &Server) -> u64 {
    get_json(server, "/sdapi/v1/progress?skip_current_image=true").1["state"]["sampling_step"]
        .as_u64()
        .unwrap_or(0)
}

pub fn health(server: &Server) -> Value {
    get_json(server, "/health").1
}

/// The `w` x `h` pixels of `im` at (`x`, `y`), row after row.
pub fn crop(im: &RgbImage, x: usize, y: usize, w: usize, h: usize) -> Vec<u8> {
    (y..y + h)
        .flat_map(|row| {
            let s = (row * im.width + x) * 3;
            im.data[s..s + w * 3].to_vec()
        })
        .collect()
}

/// A1111's X/Y/Z `script_args`: each axis as (type index, values text, dropdown list), then
/// draw_legend (on), include_lone_images, include_sub_grids, no_fixed_seeds (off), margin_size.
pub fn xyz_args(axes: [(u32, &str, Value); 3], lone: bool, subs: bool, margin: u32) -> Value {
    let mut args: Vec<Value> = axes
        .into_iter()
        .flat_map(|(kind, values, dropdown)| [json!(kind), json!(values), dropdown])
        .collect();
    args.extend([
        json!(true),
        json!(lone),
        json!(subs),
        json!(false),
        json!(margin),
    ]);
    Value::Array(args)
}

/// The `name` of each entry of a listing such as /sdapi/v1/loras.
pub fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect()
}
