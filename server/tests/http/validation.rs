//! Bad input gets a 4xx with a JSON error naming the field, never a 500; model names stay inside
//! the models folder; the API key guards every route but /health.

use base64::Engine;
use kiln_server::{ModelSet, Server};
use serde_json::{json, Value};

use crate::common::*;

/// Posts `body` and checks the status, the JSON error shape and the field it names.
fn rejects(server: &Server, path: &str, body: &Value, status: u16, field: &str) {
    let (s, e) = post_json(server, path, body);
    assert_eq!(s, status, "{path} {body} -> {s} {e}");
    assert_eq!(e["field"], field, "{path} {body} -> {e}");
    assert!(e["error"].is_string() && e["detail"].is_string(), "{e}");
}

fn with(base: Value, key: &str, value: Value) -> Value {
    let mut b = base;
    b[key] = value;
    b
}

#[test]
fn every_validation_case() {
    let mut c = config();
    c.max_pixels = 128 * 128;
    let server = start(c);
    let t2i = "/sdapi/v1/txt2img";
    let base = small("x", 1);
    // Wrong types: 422.
    rejects(
        &server,
        t2i,
        &with(base.clone(), "steps", json!("ten")),
        422,
        "steps",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "prompt", json!(5)),
        422,
        "prompt",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "width", json!(64.5)),
        422,
        "width",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "override_settings", json!([1])),
        422,
        "override_settings",
    );
    rejects(&server, t2i, &json!([1, 2]), 422, "body");
    let raw = client()
        .post(format!("{}{t2i}", server.url()))
        .body("{\"prompt\": ")
        .send()
        .unwrap();
    assert_eq!(raw.status().as_u16(), 422);
    assert_eq!(raw.json::<Value>().unwrap()["field"], "body");
    // Values out of range: 400.
    rejects(
        &server,
        t2i,
        &with(base.clone(), "steps", json!(-3)),
        400,
        "steps",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "steps", json!(0)),
        400,
        "steps",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "steps", json!(1_000_000)),
        400,
        "steps",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "width", json!(60)),
        400,
        "width",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "height", json!(-64)),
        400,
        "height",
    );
    rejects(
        &server,
        t2i,
        &with(
            with(base.clone(), "width", json!(256)),
            "height",
            json!(256),
        ),
        400,
        "width",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "seed", json!(-5)),
        400,
        "seed",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "cfg_scale", json!(1e9)),
        400,
        "cfg_scale",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "batch_size", json!(0)),
        400,
        "batch_size",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "n_iter", json!(100_000)),
        400,
        "n_iter",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "sampler_name", json!("Heun++ 9000")),
        400,
        "sampler_name",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "scheduler", json!("beta")),
        400,
        "scheduler",
    );
    // A schedule the sampler's diffusers class lacks.
    let lcm = with(base.clone(), "sampler_name", json!("LCM"));
    rejects(
        &server,
        t2i,
        &with(lcm, "scheduler", json!("sgm_uniform")),
        400,
        "scheduler",
    );
    rejects(
        &server,
        t2i,
        // The hires fix's second pass must fit --max-pixels too (4 x 64 px = 256 > 128).
        &with(
            with(base.clone(), "enable_hr", json!(true)),
            "hr_scale",
            json!(4),
        ),
        400,
        "hr_scale",
    );
    rejects(
        &server,
        t2i,
        &with(base.clone(), "clip_skip", json!(99)),
        400,
        "clip_skip",
    );
    rejects(
        &server,
        t2i,
        &with(
            base.clone(),
            "override_settings",
            json!({"sd_model_checkpoint": "nope"}),
        ),
        400,
        "override_settings.sd_model_checkpoint",
    );
    // img2img: missing, malformed and non-image init images and masks.
    let i2i = "/sdapi/v1/img2img";
    let png = {
        let (_, b) = post_json(&server, t2i, &base);
        b["images"][0].as_str().unwrap().to_string()
    };
    rejects(&server, i2i, &base, 400, "init_images");
    rejects(
        &server,
        i2i,
        &with(base.clone(), "init_images", json!([])),
        400,
        "init_images",
    );
    rejects(
        &server,
        i2i,
        &with(base.clone(), "init_images", json!(["%%%not base64"])),
        400,
        "init_images[0]",
    );
    let not_image = base64::engine::general_purpose::STANDARD.encode(b"hello, not an image");
    rejects(
        &server,
        i2i,
        &with(base.clone(), "init_images", json!([not_image])),
        400,
        "init_images[0]",
    );
    let ok = with(
        with(base.clone(), "init_images", json!([png])),
        "steps",
        json!(4),
    );
    rejects(
        &server,
        i2i,
        &with(ok.clone(), "mask", json!("!!")),
        400,
        "mask",
    );
    rejects(
        &server,
        i2i,
        &with(ok.clone(), "denoising_strength", json!(1.5)),
        400,
        "denoising_strength",
    );
    rejects(
        &server,
        i2i,
        &with(ok.clone(), "denoising_strength", json!(0)),
        400,
        "denoising_strength",
    );
    let (s, b) = post_json(&server, i2i, &ok);
    assert_eq!(s, 200, "{b}");
    // Other routes.
    rejects(&server, "/sdapi/v1/png-info", &json!({}), 422, "image");
    rejects(
        &server,
        "/sdapi/v1/png-info",
        &json!({"image": not_image}),
        400,
        "image",
    );
    rejects(
        &server,
        "/sdapi/v1/png-info",
        &json!({"image": "@@"}),
        400,
        "image",
    );
    rejects(
        &server,
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "../bundled"}),
        400,
        "sd_model_checkpoint",
    );
    rejects(
        &server,
        "/sdapi/v1/options",
        &json!({"CLIP_stop_at_last_layers": "two"}),
        422,
        "CLIP_stop_at_last_layers",
    );
    rejects(
        &server,
        "/sdapi/v1/options",
        &json!({"randn_source": "TPU"}),
        400,
        "randn_source",
    );
    let gen = "/v1/images/generations";
    rejects(&server, gen, &json!({}), 400, "prompt");
    rejects(
        &server,
        gen,
        &json!({"prompt": "x", "size": "65x64"}),
        400,
        "size",
    );
    rejects(
        &server,
        gen,
        &json!({"prompt": "x", "size": "1024x1024"}),
        400,
        "size",
    );
    rejects(
        &server,
        gen,
        &json!({"prompt": "x", "size": "64x64", "n": 0}),
        400,
        "n",
    );
    rejects(
        &server,
        gen,
        &json!({"prompt": "x", "size": "64x64", "model": "../../etc"}),
        400,
        "model",
    );
    rejects(&server, gen, &json!({"prompt": 3}), 422, "prompt");
    // Still healthy after all that.
    assert_eq!(health(&server)["status"], "ok");
}

#[test]
fn oversized_bodies_are_refused() {
    let mut c = config();
    c.max_body_bytes = 4096;
    let server = start(c);
    let big = json!({"prompt": "x".repeat(10_000)});
    let (s, e) = post_json(&server, "/sdapi/v1/txt2img", &big);
    assert_eq!(s, 413, "{e}");
    assert_eq!(e["field"], "body");
    let (s, e) = post_json(
        &server,
        "/sdapi/v1/png-info",
        &json!({"image": "A".repeat(10_000)}),
    );
    assert_eq!((s, e["field"].clone()), (413, json!("body")));
}

/// A models folder with two names for the bundled model.
fn models_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-serve-models-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["alpha", "beta"] {
        std::os::unix::fs::symlink(bundled().canonicalize().unwrap(), dir.join(name)).unwrap();
    }
    std::fs::write(dir.join("readme.txt"), "not a model").unwrap();
    dir
}

fn model_of(body: &Value) -> String {
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    info["sd_model_name"].as_str().unwrap().to_string()
}

#[test]
fn models_folder_switching_and_escapes() {
    let dir = models_dir();
    let mut c = config();
    c.models = ModelSet::Dir(dir.clone());
    let server = start(c);
    let (_, models) = get_json(&server, "/sdapi/v1/sd-models");
    let titles: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(titles[0].starts_with("alpha [") && titles[1].starts_with("beta ["));

    let (_, body) = post_json(&server, "/sdapi/v1/txt2img", &small("x", 1));
    assert_eq!(model_of(&body), "alpha");
    let (s, _) = post_json(
        &server,
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": titles[1]}),
    );
    assert_eq!(s, 200);
    assert_eq!(
        get_json(&server, "/sdapi/v1/options").1["sd_model_checkpoint"],
        titles[1]
    );
    let (_, body) = post_json(&server, "/sdapi/v1/txt2img", &small("x", 1));
    assert_eq!(model_of(&body), "beta");
    let per_request = with(
        small("x", 1),
        "override_settings",
        json!({"sd_model_checkpoint": "alpha"}),
    );
    let (_, body) = post_json(&server, "/sdapi/v1/txt2img", &per_request);
    assert_eq!(model_of(&body), "alpha");
    let (_, body) = post_json(
        &server,
        "/v1/images/generations",
        &json!({"prompt": "x", "model": "beta", "size": "64x64", "steps": 1}),
    );
    assert_eq!(body["data"].as_array().unwrap().len(), 1);

    let outside = bundled().canonicalize().unwrap();
    for bad in [
        "../alpha".to_string(),
        "readme.txt".into(),
        format!("{}", dir.join("../alpha").display()),
        outside.display().to_string(),
        "/etc/passwd".into(),
    ] {
        let req = with(
            small("x", 1),
            "override_settings",
            json!({"sd_model_checkpoint": bad}),
        );
        rejects(
            &server,
            "/sdapi/v1/txt2img",
            &req,
            400,
            "override_settings.sd_model_checkpoint",
        );
        rejects(
            &server,
            "/sdapi/v1/options",
            &json!({"sd_model_checkpoint": bad}),
            400,
            "sd_model_checkpoint",
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn api_key_guards_everything_but_health() {
    let mut c = config();
    c.api_key = Some("s3cret".into());
    let server = start(c);
    let url = |p: &str| format!("{}{p}", server.url());
    assert_eq!(get(&server, "/health").status().as_u16(), 200);
    for path in [
        "/",
        "/sdapi/v1/sd-models",
        "/sdapi/v1/options",
        "/v1/models",
        "/openapi.json",
    ] {
        let r = get(&server, path);
        assert_eq!(r.status().as_u16(), 401, "{path}");
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        assert_eq!(r.json::<Value>().unwrap()["error"], "unauthorized");
    }
    assert_eq!(
        post(&server, "/sdapi/v1/txt2img", &small("x", 1))
            .status()
            .as_u16(),
        401
    );
    let c = client();
    let status = |r: reqwest::blocking::RequestBuilder| r.send().unwrap().status().as_u16();
    assert_eq!(
        status(c.get(url("/sdapi/v1/sd-models")).bearer_auth("s3cret")),
        200
    );
    assert_eq!(
        status(c.get(url("/sdapi/v1/sd-models")).bearer_auth("wrong")),
        401
    );
    assert_eq!(
        status(
            c.get(url("/sdapi/v1/sd-models"))
                .basic_auth("user", Some("s3cret"))
        ),
        200
    );
    assert_eq!(
        status(
            c.get(url("/sdapi/v1/sd-models"))
                .basic_auth("user", Some("nope"))
        ),
        401
    );
    let r = c
        .post(url("/sdapi/v1/txt2img"))
        .bearer_auth("s3cret")
        .json(&small("x", 1));
    assert_eq!(status(r), 200);

    // Without a key everything is open.
    let open = start(config());
    assert_eq!(get(&open, "/sdapi/v1/sd-models").status().as_u16(), 200);
}
