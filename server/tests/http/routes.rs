//! Each route's response shape.

use std::time::Instant;

use kiln_models::image::infotext::InfoText;
use kiln_models::image::png::{decode_png, encode_png};
use kiln_models::image::RgbImage;
use serde_json::{json, Value};

use crate::common::*;

#[test]
fn txt2img_answers_like_a1111() {
    let server = start(config());
    let t = Instant::now();
    let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &small("a red circle", 2));
    eprintln!("txt2img 64x64 2 steps (with model load): {:?}", t.elapsed());
    assert_eq!(status, 200, "{body}");
    let images = body["images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    let png = decode_png(&b64decode(images[0].as_str().unwrap())).unwrap();
    assert_eq!((png.image.width, png.image.height), (64, 64));
    let text = png.text("parameters").unwrap();
    let parsed = InfoText::parse(text);
    assert_eq!(parsed.prompt, "a red circle");
    assert_eq!(parsed.get("Steps"), Some("2"));
    assert_eq!(parsed.get("Seed"), Some("42"));
    assert_eq!(parsed.get("Size"), Some("64x64"));
    assert_eq!(parsed.get("Model"), Some("bundled"));
    assert_eq!(parsed.get("Model hash").map(str::len), Some(10));

    // parameters echo the request with A1111's defaults filled in.
    let p = &body["parameters"];
    assert_eq!(p["prompt"], "a red circle");
    assert_eq!(p["steps"], 2);
    assert_eq!(p["sampler_name"], "Euler");
    assert_eq!(p["batch_size"], 1);
    assert_eq!(p["send_images"], true);

    // info is a JSON string.
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["seed"], 42);
    assert_eq!(info["all_seeds"], json!([42]));
    assert_eq!(info["width"], 64);
    assert_eq!(info["sd_model_name"], "bundled");
    assert_eq!(info["infotexts"][0], text);
    assert_eq!(info["job_timestamp"].as_str().unwrap().len(), 14);

    // Same seed, same image; a batch gets consecutive seeds; send_images false sends none.
    let t = Instant::now();
    let (_, again) = post_json(&server, "/sdapi/v1/txt2img", &small("a red circle", 2));
    eprintln!("txt2img 64x64 2 steps (model loaded): {:?}", t.elapsed());
    assert_eq!(again["images"][0], body["images"][0]);
    let mut batch = small("a red circle", 1);
    batch["batch_size"] = json!(2);
    batch["n_iter"] = json!(2);
    let (status, b) = post_json(&server, "/sdapi/v1/txt2img", &batch);
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["images"].as_array().unwrap().len(), 4);
    let info: Value = serde_json::from_str(b["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["all_seeds"], json!([42, 43, 44, 45]));
    let mut quiet = small("x", 1);
    quiet["send_images"] = json!(false);
    let (_, q) = post_json(&server, "/sdapi/v1/txt2img", &quiet);
    assert_eq!(q["images"], json!([]));
}

fn solid(w: usize, h: usize, rgb: [u8; 3]) -> String {
    let data = (0..w * h).flat_map(|_| rgb).collect();
    b64encode(&encode_png(&RgbImage::new(w, h, data).unwrap(), &[]).unwrap())
}

#[test]
fn img2img_and_inpainting() {
    let server = start(config());
    let init = solid(64, 64, [200, 30, 30]);
    let mut req = small("a blue square", 2);
    req["init_images"] = json!([format!("data:image/png;base64,{init}")]);
    req["denoising_strength"] = json!(0.5);
    let (status, body) = post_json(&server, "/sdapi/v1/img2img", &req);
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    assert_eq!(
        InfoText::parse(png.text("parameters").unwrap()).get("Denoising strength"),
        Some("0.5")
    );
    // The init image is not echoed back unless asked.
    assert!(body["parameters"].get("init_images").is_none());
    assert_eq!(body["parameters"]["denoising_strength"], 0.5);

    // Inpainting: a black mask keeps everything, so the output stays close to the init image.
    req["mask"] = json!(solid(64, 64, [0, 0, 0]));
    req["include_init_images"] = json!(true);
    let (status, body) = post_json(&server, "/sdapi/v1/img2img", &req);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["parameters"]["init_images"].as_array().unwrap().len(),
        1
    );
    let kept = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    let mean_red = kept.image.data.chunks(3).map(|p| p[0] as f64).sum::<f64>() / 4096.0;
    assert!(
        mean_red > 120.0,
        "masked-out area changed: mean red {mean_red}"
    );

    // Without width/height the init image's size is used.
    let sized =
        json!({"prompt": "x", "steps": 2, "seed": 1, "init_images": [solid(128, 64, [9, 9, 9])]});
    let (status, body) = post_json(&server, "/sdapi/v1/img2img", &sized);
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    assert_eq!((png.image.width, png.image.height), (128, 64));
}

#[test]
fn info_routes() {
    let server = start(config());
    let (s, models) = get_json(&server, "/sdapi/v1/sd-models");
    assert_eq!(s, 200);
    let m = &models[0];
    let hash = m["hash"].as_str().unwrap();
    assert_eq!(hash.len(), 10);
    assert!(m["sha256"].as_str().unwrap().starts_with(hash));
    assert_eq!(m["title"], format!("bundled [{hash}]"));
    assert_eq!(m["model_name"], "bundled");
    assert!(m["filename"].as_str().unwrap().ends_with("bundled"));

    let (_, samplers) = get_json(&server, "/sdapi/v1/samplers");
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Euler",
            "Euler a",
            "Heun",
            "DPM2",
            "DDIM",
            "DDPM",
            "DPM++ 2M",
            "DPM++ 2M SDE",
            "DPM++ SDE",
            "UniPC",
            "LCM"
        ]
    );
    assert!(samplers[0]["aliases"].is_array() && samplers[0]["options"].is_object());
    assert_eq!(samplers[2]["aliases"][0], "k_heun");
    assert_eq!(samplers[3]["options"]["second_order"], true);
    let (_, schedulers) = get_json(&server, "/sdapi/v1/schedulers");
    let labels: Vec<&str> = schedulers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["Automatic", "Karras", "Exponential", "SGM Uniform"]
    );
    assert_eq!(schedulers[3]["name"], "sgm_uniform");

    let (_, options) = get_json(&server, "/sdapi/v1/options");
    assert_eq!(options["sd_model_checkpoint"], format!("bundled [{hash}]"));
    let (s, _) = post_json(
        &server,
        "/sdapi/v1/options",
        &json!({"CLIP_stop_at_last_layers": 2, "my_setting": 5}),
    );
    assert_eq!(s, 200);
    let (_, options) = get_json(&server, "/sdapi/v1/options");
    assert_eq!(options["CLIP_stop_at_last_layers"], 2);
    assert_eq!(options["my_setting"], 5);

    let (s, p) = get_json(&server, "/sdapi/v1/progress");
    assert_eq!(s, 200);
    assert_eq!(p["progress"], 0.0);
    for k in [
        "skipped",
        "interrupted",
        "job",
        "job_count",
        "job_timestamp",
        "job_no",
        "sampling_step",
        "sampling_steps",
    ] {
        assert!(p["state"].get(k).is_some(), "state.{k} missing: {p}");
    }
    assert!(p.get("eta_relative").is_some() && p.get("current_image").is_some());
    assert!(p.get("textinfo").is_some());
    assert_eq!(
        post_json(&server, "/sdapi/v1/interrupt", &json!({})),
        (200, json!({}))
    );
    assert_eq!(
        post_json(&server, "/sdapi/v1/skip", &json!({})),
        (200, json!({}))
    );
    assert_eq!(
        post_json(&server, "/sdapi/v1/refresh-checkpoints", &json!({})).0,
        200
    );

    let (s, h) = get_json(&server, "/health");
    assert_eq!(s, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["queue"]["capacity"], 16);

    let (s, v1) = get_json(&server, "/v1/models");
    assert_eq!(s, 200);
    assert_eq!(v1["object"], "list");
    assert_eq!(v1["data"][0]["id"], "bundled");

    let (s, e) = get_json(&server, "/no/such/route");
    assert_eq!(s, 404);
    assert_eq!(e["error"], "not_found");
}

#[test]
fn png_info_reads_back_the_infotext() {
    let server = start(config());
    let (_, body) = post_json(&server, "/sdapi/v1/txt2img", &{
        let mut r = small("a green triangle, (bold:1.2)", 1);
        r["negative_prompt"] = json!("blurry");
        r
    });
    let image = body["images"][0].as_str().unwrap();
    let (s, info) = post_json(&server, "/sdapi/v1/png-info", &json!({"image": image}));
    assert_eq!(s, 200, "{info}");
    assert!(info["info"]
        .as_str()
        .unwrap()
        .starts_with("a green triangle, (bold:1.2)\nNegative prompt: blurry\nSteps: 1"));
    assert_eq!(info["items"]["parameters"], info["info"]);
    assert_eq!(info["parameters"]["Prompt"], "a green triangle, (bold:1.2)");
    assert_eq!(info["parameters"]["Negative prompt"], "blurry");
    assert_eq!(info["parameters"]["Seed"], "42");
    // A PNG without the chunk: empty info.
    let (s, none) = post_json(
        &server,
        "/sdapi/v1/png-info",
        &json!({"image": solid(8, 8, [1, 2, 3])}),
    );
    assert_eq!((s, none["info"].clone()), (200, json!("")));
}

#[test]
fn openai_images() {
    let server = start(config());
    let (s, body) = post_json(
        &server,
        "/v1/images/generations",
        &json!({"prompt": "a red circle", "size": "64x64", "n": 2, "steps": 1, "seed": 3,
                "response_format": "b64_json"}),
    );
    assert_eq!(s, 200, "{body}");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let png = decode_png(&b64decode(data[1]["b64_json"].as_str().unwrap())).unwrap();
    assert_eq!(
        InfoText::parse(png.text("parameters").unwrap()).get("Seed"),
        Some("4")
    );
    let (s, e) = post_json(
        &server,
        "/v1/images/generations",
        &json!({"prompt": "x", "response_format": "url"}),
    );
    assert_eq!((s, e["field"].clone()), (400, json!("response_format")));
}

#[test]
fn openapi_documents_every_route_and_the_router_serves_each() {
    let server = start(config());
    let (s, doc) = get_json(&server, "/openapi.json");
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for route in kiln_server::ROUTES {
        assert!(
            paths[route.path].get(route.method).is_some(),
            "{} {}",
            route.method,
            route.path
        );
        // The route exists: any answer but 404/405. POSTs get an empty object (a 4xx for most).
        let url = format!("{}{}", server.url(), route.path);
        let c = client();
        let status = if route.method == "get" {
            if route.path.ends_with("/stream") {
                continue;
            }
            c.get(&url).send().unwrap().status().as_u16()
        } else {
            if route.path.ends_with("2img") || route.path.ends_with("generations") {
                continue;
            }
            c.post(&url)
                .json(&json!({}))
                .send()
                .unwrap()
                .status()
                .as_u16()
        };
        assert!(
            status != 404 && status != 405,
            "{} {} -> {status}",
            route.method,
            route.path
        );
    }
    let page = get(&server, "/").text().unwrap();
    assert!(page.contains("id=\"generate\"") && page.contains("/sdapi/v1/txt2img"));
    assert!(get(&server, "/docs")
        .text()
        .unwrap()
        .contains("/sdapi/v1/img2img"));
}

#[test]
fn serves_quantised_weights() {
    let mut c = config();
    c.weight_type = "q8_0".parse().unwrap();
    let server = start(c);
    let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &small("a red circle", 2));
    assert_eq!(status, 200, "{body}");
    let f32_server = start(config());
    let (_, f32_body) = post_json(&f32_server, "/sdapi/v1/txt2img", &small("a red circle", 2));
    // Packed weights change the numbers slightly, so the PNG differs.
    assert_ne!(body["images"][0], f32_body["images"][0]);
}

/// A folder with a 2-vector embedding that fits the bundled model's 64-wide text encoder, a
/// 32-wide one that does not, and a pickle that is skipped.
fn embeddings_folder() -> std::path::PathBuf {
    use kiln_runtime::loader::{write_safetensors, Dtype};
    let dir = std::env::temp_dir().join(format!("kiln-embeddings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vectors = |n: usize, width: usize| -> Vec<u8> {
        (0..n * width)
            .flat_map(|i| ((i as f32 * 0.37).sin()).to_le_bytes())
            .collect()
    };
    write_safetensors(
        &dir.join("kilnmark.safetensors"),
        &[("emb_params", Dtype::F32, vec![2, 64], vectors(2, 64))],
    )
    .unwrap();
    write_safetensors(
        &dir.join("narrow.safetensors"),
        &[("emb_params", Dtype::F32, vec![1, 32], vectors(1, 32))],
    )
    .unwrap();
    std::fs::write(dir.join("legacy.pt"), b"PK\x03\x04 a pickle").unwrap();
    dir
}

#[test]
fn textual_inversion_embeddings_through_the_api() {
    let dir = embeddings_folder();
    let mut c = config();
    c.embeddings = Some(std::sync::Arc::new(
        kiln_models::embeddings::EmbeddingDb::load_dir(&dir).unwrap(),
    ));
    let server = start(c);
    let (s, list) = get_json(&server, "/sdapi/v1/embeddings");
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["loaded"]["kilnmark"]["vectors"], 2);
    assert_eq!(list["loaded"]["kilnmark"]["shape"], 64);
    assert_eq!(list["loaded"]["narrow"]["shape"], 32);
    assert!(list["skipped"]["legacy"].is_object(), "{list}");

    // The infotext lists the embedding's hash as A1111 does (what the vectors do to the image is
    // checked against diffusers in kiln-tests' pipeline goldens).
    let (status, body) = post_json(&server, "/sdapi/v1/txt2img", &small("a kilnmark circle", 2));
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    let parsed = InfoText::parse(png.text("parameters").unwrap());
    let sha = kiln_models::pipeline::sha256_file(&dir.join("kilnmark.safetensors")).unwrap();
    assert_eq!(
        parsed.get("TI hashes"),
        Some(format!("kilnmark: {}", &sha[..12]).as_str())
    );

    // An embedding of the wrong width is named in a 400, not silently read as words.
    let (status, err) = post_json(&server, "/sdapi/v1/txt2img", &small("a narrow circle", 2));
    assert_eq!(status, 400, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("narrow") && text.contains("32-wide"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_vae_file_replaces_the_vae_and_is_named_in_the_infotext() {
    let image = |server: &kiln_server::Server| {
        let (status, body) = post_json(server, "/sdapi/v1/txt2img", &small("a red circle", 2));
        assert_eq!(status, 200, "{body}");
        decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap()
    };
    let own = image(&start(config()));
    // The bundled model's own VAE weights as a file of their own: the same pixels.
    let vae = bundled().join("vae/diffusion_pytorch_model.safetensors");
    let mut c = config();
    c.vae = Some(vae.clone());
    let png = image(&start(c));
    assert_eq!(png.image.data, own.image.data);
    let info = InfoText::parse(png.text("parameters").unwrap());
    assert_eq!(info.get("VAE"), Some("diffusion_pytorch_model.safetensors"));
    let hash = kiln_models::pipeline::short_hash(&vae).unwrap();
    assert_eq!(info.get("VAE hash"), Some(hash.as_str()));
    assert_eq!(
        own.text("parameters").map(|t| t.contains("VAE")),
        Some(false)
    );

    // A missing file stops the server before it listens.
    let mut c = config();
    c.vae = Some(bundled().join("no-such-vae.safetensors"));
    let e = kiln_server::Server::start(c).err().unwrap().to_string();
    assert!(
        e.contains("--vae") && e.contains("no-such-vae.safetensors"),
        "{e}"
    );
}
