//! txt2img with A1111's hires-fix fields: the second pass's image is diffusers' (the golden of
//! tools/make_hires_goldens.py, within one 8-bit level of its rounding) and the infotext carries
//! A1111's hires fields; a bad upscaler name is a 400 naming `hr_upscaler`.

use std::path::PathBuf;

use kiln_models::image::png::decode_png;
use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, DeviceChoice};
use kiln_server::{ModelSet, ServerConfig};
use serde_json::{json, Value};

use crate::common::{b64decode, post_json, start};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sd1")
}

fn request() -> Value {
    // tests/fixtures/tiny-sd1/hires_cases.json's "latent_x2_euler".
    json!({"prompt": "a red circle on a blue background", "negative_prompt": "blurry",
           "width": 32, "height": 32, "steps": 3, "seed": 7, "cfg_scale": 7.5,
           "sampler_name": "Euler", "enable_hr": true, "hr_scale": 2, "hr_upscaler": "Latent",
           "hr_second_pass_steps": 2, "denoising_strength": 0.6})
}

#[test]
fn hires_fix_requests_give_diffusers_two_pass_image() {
    let mut c = ServerConfig::new(ModelSet::Single(tiny()));
    c.device = DeviceChoice::Cpu;
    c.listen = "127.0.0.1:0".parse().unwrap();
    let server = start(c);
    let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &request());
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    assert_eq!((png.image.width, png.image.height), (64, 64));
    let file = WeightFile::open(tiny().join("hires_golden.safetensors")).unwrap();
    let want = file
        .load("latent_x2_euler/image", &Device::Cpu, Some(DType::F32))
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let worst = png
        .image
        .data
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (f32::from(g) - (w * 255.0).round()).abs())
        .fold(0.0, f32::max);
    assert!(worst <= 1.0, "{worst} levels off");
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    let text = info["infotexts"][0].as_str().unwrap();
    assert!(
        text.contains("Denoising strength: 0.6")
            && text.contains("Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent"),
        "{text}"
    );

    // An upscaler of --upscaler-dir between the passes, by its listed name.
    let mut c = ServerConfig::new(ModelSet::Single(tiny()));
    c.device = DeviceChoice::Cpu;
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.upscaler_dir = Some(tiny().join("../upscalers"));
    let with_models = start(c);
    let mut model = request();
    model["hr_upscaler"] = json!("rrdb_x2");
    let (status, body) = post_json(&with_models, "/sdapi/v1/txt2img", &model);
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    assert_eq!((png.image.width, png.image.height), (64, 64));
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    assert!(info["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Hires upscaler: rrdb_x2"));

    let mut bad = request();
    bad["hr_upscaler"] = json!("4x-Magic");
    let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &bad);
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("hr_upscaler"), "{body}");
}

/// Hires fix with a ControlNet unit (as the A1111 extension runs it, the map fitted again to the
/// second pass's size): both fields reach the infotext and the unit changes the image.
#[test]
fn hires_fix_runs_with_a_controlnet_unit() {
    let fixtures = tiny().join("..");
    let mut c = ServerConfig::new(ModelSet::Single(tiny()));
    c.device = DeviceChoice::Cpu;
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.controlnet_dir = Some(fixtures.join("controlnet"));
    let server = start(c);
    let control = std::fs::read(fixtures.join("controlnet/control.png")).unwrap();
    let mut with_unit = request();
    with_unit["alwayson_scripts"] = json!({"controlnet": {"args": [
        {"image": crate::common::b64encode(&control), "module": "canny", "model": "sd1-a",
         "weight": 1.0}]}});
    let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &with_unit);
    assert_eq!(status, 200, "{body}");
    let (status, plain) = post_json(&server, "/sdapi/v1/txt2img", &request());
    assert_eq!(status, 200, "{plain}");
    let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    assert_eq!((png.image.width, png.image.height), (64, 64));
    let text = png.text("parameters").unwrap();
    assert!(
        text.contains("Hires upscale: 2") && text.contains("ControlNet 0: \"Module: canny"),
        "{text}"
    );
    assert_ne!(body["images"][0], plain["images"][0]);
}
