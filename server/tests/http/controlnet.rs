//! `kiln serve --controlnet-dir`: the ControlNet extension's /controlnet/model_list and
//! /controlnet/module_list, a txt2img with an `alwayson_scripts.controlnet` unit (the tiny SD1
//! pipeline and tests/fixtures/controlnet; tests/tests/controlnet.rs compares the pixels with
//! diffusers), every control mode and resize mode named in the infotext, and 400s naming the
//! unit's field.

use std::path::PathBuf;

use kiln_models::image::png::decode_png;
use kiln_runtime::DeviceChoice;
use kiln_server::{ModelSet, ServerConfig};
use serde_json::{json, Value};

use crate::common::{b64decode, b64encode, get_json, post_json, start};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn config() -> ServerConfig {
    let mut c = ServerConfig::new(ModelSet::Single(fixtures().join("tiny-sd1")));
    c.device = DeviceChoice::Cpu;
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.controlnet_dir = Some(fixtures().join("controlnet"));
    c
}

fn request(unit: Value) -> Value {
    json!({"prompt": "a red circle", "width": 32, "height": 32, "steps": 2, "seed": 42,
           "alwayson_scripts": {"controlnet": {"args": [unit]}}})
}

fn control_png() -> String {
    b64encode(&std::fs::read(fixtures().join("controlnet/control.png")).unwrap())
}

#[test]
fn controlnet_units_run_and_bad_ones_are_refused() {
    let server = start(config());
    let (status, list) = get_json(&server, "/controlnet/model_list");
    assert_eq!(status, 200);
    let names: Vec<&str> = list["model_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in ["sd1-a [", "sd1-b [", "sdxl ["] {
        assert!(names.iter().any(|n| n.starts_with(want)), "{names:?}");
    }
    let (status, modules) = get_json(&server, "/controlnet/module_list");
    assert_eq!(status, 200);
    assert!(modules["module_list"]
        .as_array()
        .unwrap()
        .contains(&json!("none")));

    let sd1a = names.iter().find(|n| n.starts_with("sd1-a [")).unwrap();
    let unit = json!({"enabled": true, "image": {"image": control_png(), "mask": null},
                      "module": "none", "model": sd1a, "weight": 0.8, "guidance_start": 0.0,
                      "guidance_end": 1.0, "control_mode": "Balanced"});
    let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &request(unit.clone()));
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    let text = png.text("parameters").unwrap();
    // No resize_mode: the extension's default, "Crop and Resize".
    assert!(
        text.contains(&format!(
            "ControlNet 0: \"Module: none, Model: {sd1a}, Weight: 0.8, Resize Mode: Crop and Resize"
        )),
        "{text}"
    );

    // Every control mode and resize mode, by name or index, reaches the infotext.
    for (control_mode, resize_mode, names) in [
        (
            json!(1),
            json!("Just Resize"),
            ("My prompt is more important", "Just Resize"),
        ),
        (
            json!("ControlNet is more important"),
            json!(2),
            ("ControlNet is more important", "Resize and Fill"),
        ),
        (
            json!(0),
            json!("Crop and Resize"),
            ("Balanced", "Crop and Resize"),
        ),
    ] {
        let mut u = unit.clone();
        u["control_mode"] = control_mode;
        u["resize_mode"] = resize_mode;
        u["module"] = json!("canny");
        u["processor_res"] = json!(64);
        let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &request(u));
        assert_eq!(status, 200, "{body}");
        let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
        let text = png.text("parameters").unwrap();
        let (mode, resize) = names;
        assert!(
            text.contains(&format!("Resize Mode: {resize},"))
                && text.contains(&format!("Control Mode: {mode}\"")),
            "{text}"
        );
    }

    let refused = |unit: Value, field: &str, needle: &str| {
        let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &request(unit));
        assert_eq!(status, 400, "{body}");
        let text = body.to_string();
        assert!(text.contains(field) && text.contains(needle), "{text}");
    };
    let mut u = unit.clone();
    u["model"] = json!("sdxl");
    refused(
        u,
        "alwayson_scripts.controlnet.args[0].model",
        "another base model",
    );
    let mut u = unit.clone();
    u["model"] = json!("nothing [1234]");
    refused(
        u,
        "alwayson_scripts.controlnet.args[0].model",
        "unknown ControlNet",
    );
    let mut u = unit.clone();
    u["image"] = json!("bm90IGFuIGltYWdl");
    refused(u, "alwayson_scripts.controlnet.args[0].image", "");
    let mut u = unit.clone();
    u["module"] = json!("nope");
    refused(u, "alwayson_scripts.controlnet.args[0].module", "nope");
    for (key, value, needle) in [
        ("control_mode", json!("Loud"), "Loud"),
        ("control_mode", json!(3), "3"),
        ("resize_mode", json!("Stretch"), "Crop and Resize"),
        ("processor_res", json!(10), "64"),
        ("processor_res", json!("big"), "number"),
    ] {
        let mut u = unit.clone();
        u[key] = value;
        refused(
            u,
            &format!("alwayson_scripts.controlnet.args[0].{key}"),
            needle,
        );
    }
}

/// `pixel_perfect`: the preprocessor runs at the resolution the output's pixel density gives
/// (the 32 px control image covering a 64x96 output: short side x3 = 96), as `processor_res` 96
/// would, not at the default 512.
#[test]
fn pixel_perfect_runs_the_preprocessor_at_the_outputs_density() {
    let server = start(config());
    let run = |extra: Value| {
        let mut unit = json!({"image": control_png(), "module": "canny", "model": "sd1-a"});
        for (k, v) in extra.as_object().unwrap() {
            unit[k] = v.clone();
        }
        let mut body = request(unit);
        (body["width"], body["height"]) = (json!(64), json!(96));
        let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &body);
        assert_eq!(status, 200, "{body}");
        // The pixels: the infotexts differ (Processor Res, Pixel Perfect).
        decode_png(&b64decode(body["images"][0].as_str().unwrap()))
            .unwrap()
            .image
            .data
    };
    let perfect = run(json!({"pixel_perfect": true}));
    // Recorded as the extension records it: the sent processor_res (here its default), the
    // thresholds with one out of canny's 1..255 range back at its default.
    let unit = json!({"image": control_png(), "module": "canny", "model": "sd1-a",
                      "pixel_perfect": true, "threshold_a": 50, "threshold_b": 300});
    let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &request(unit));
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    let text = png.text("parameters").unwrap();
    assert!(
        text.contains(
            "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 50.0, Threshold B: \
             200, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: True, Control Mode: \
             Balanced\""
        ),
        "{text}"
    );
    assert_eq!(perfect, run(json!({"processor_res": 96})));
    assert_ne!(perfect, run(json!({})));
    let (status, body) = post_json(
        &server,
        "/sdapi/v1/txt2img",
        &request(json!({"image": control_png(), "model": "sd1-a", "pixel_perfect": "yes"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("pixel_perfect"), "{body}");
}
