//! `kiln serve --lora-dir`: GET /sdapi/v1/loras in A1111's shape, and `<lora:NAME:WEIGHT>` in a
//! txt2img prompt giving diffusers' image (the tiny SD1 pipeline and its LoRA fixtures from
//! tools/make_lora_fixtures.py; tests/tests/lora.rs compares the float images at 1e-3, here the
//! PNG's 8-bit pixels are within one level of the golden's rounding).

use std::path::PathBuf;

use kiln_models::image::png::decode_png;
use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, DeviceChoice};
use kiln_server::{ModelSet, ServerConfig};
use serde_json::{json, Value};

use crate::common::{b64decode, get_json, names, post_json, start};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sd1")
}

fn config(lora_dir: bool) -> ServerConfig {
    let mut c = ServerConfig::new(ModelSet::Single(tiny()));
    c.device = DeviceChoice::Cpu;
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.lora_dir = lora_dir.then(|| tiny().join("loras"));
    c
}

/// `name/image` of lora_golden.safetensors.
fn golden(name: &str) -> Vec<f32> {
    let file = WeightFile::open(tiny().join("lora_golden.safetensors")).unwrap();
    let t = file.load(&format!("{name}/image"), &Device::Cpu, Some(DType::F32));
    t.unwrap().to_vec_f32().unwrap()
}

fn request(prompt: &str) -> Value {
    json!({"prompt": prompt, "negative_prompt": "", "width": 32, "height": 32, "steps": 4,
           "seed": 42, "cfg_scale": 7.5, "sampler_name": "Euler"})
}

#[test]
fn loras_are_listed_and_applied_from_the_prompt() {
    let server = start(config(true));
    let (status, list) = get_json(&server, "/sdapi/v1/loras");
    assert_eq!(status, 200);
    let names = names(&list);
    assert_eq!(names, ["kohya", "locon", "peft"]);
    let peft = &list[2];
    assert_eq!(peft["alias"], "peft");
    assert!(peft["path"].as_str().unwrap().ends_with("peft.safetensors"));
    assert!(peft["metadata"]["lora_adapter_metadata"].is_string());

    let (status, body) = post_json(
        &server,
        "/sdapi/v1/txt2img",
        &request("<lora:peft:0.5>a red circle on a blue background"),
    );
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    let want = golden("peft_w05");
    assert_eq!(png.image.data.len(), want.len());
    let worst = png
        .image
        .data
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (g as f32 - (w * 255.0).round()).abs())
        .fold(0.0, f32::max);
    assert!(worst <= 1.0, "8-bit pixels differ by {worst} levels");
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    let text = info["infotexts"][0].as_str().unwrap();
    assert!(
        text.contains("Lora hashes: \"peft: bc0cb7eac307\""),
        "{text}"
    );

    let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &request("x <lora:missing:1>"));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("`missing`"), "{body}");
}

#[test]
fn without_a_lora_folder_tags_are_refused() {
    let server = start(config(false));
    assert_eq!(get_json(&server, "/sdapi/v1/loras"), (200, json!([])));
    let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &request("x <lora:peft>"));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("--lora-dir"), "{body}");
}
