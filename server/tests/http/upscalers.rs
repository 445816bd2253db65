//! `kiln serve --upscaler-dir`: GET /sdapi/v1/upscalers in A1111's shape and POST
//! /sdapi/v1/extra-single-image through a tiny Real-ESRGAN compact model (the fixture of
//! tests/tests/upscale.rs, which checks it against PyTorch), giving the library's image exactly.

use std::path::PathBuf;

use kiln_models::image::png::{decode_png, encode_png};
use kiln_models::image::RgbImage;
use kiln_models::upscale::extras::{extras_upscale, ExtrasResize};
use kiln_models::upscale::{TileOptions, Upscaler, UpscalerModel};
use kiln_runtime::{DType, Device};
use serde_json::{json, Value};

use crate::common::{b64decode, b64encode, config, get_json, names, post_json, start};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/upscalers")
        .join(name)
}

/// A folder with two of the fixture models under A1111-style names.
fn upscaler_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-serve-upscalers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("srvgg_x4.safetensors"),
        dir.join("4x-compact.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        fixture("rrdb_x2.safetensors"),
        dir.join("RealESRGAN_x2.safetensors"),
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a model").unwrap();
    dir
}

fn image(w: usize, h: usize) -> RgbImage {
    let data = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
    RgbImage::new(w, h, data).unwrap()
}

#[test]
fn upscalers_are_listed_and_run_like_a1111_extras() {
    let dir = upscaler_dir();
    let mut c = config();
    c.upscaler_dir = Some(dir.clone());
    let server = start(c);

    let (status, list) = get_json(&server, "/sdapi/v1/upscalers");
    assert_eq!(status, 200);
    let names = names(&list);
    assert_eq!(
        names,
        ["None", "Lanczos", "Nearest", "4x-compact", "RealESRGAN_x2"]
    );
    assert_eq!(list[3]["scale"], 4);
    assert_eq!(list[4]["scale"], 2);
    assert_eq!(list[4]["model_name"], "ESRGAN");
    assert!(list[3]["model_path"]
        .as_str()
        .unwrap()
        .ends_with("4x-compact.safetensors"));
    assert_eq!(list[0]["model_path"], Value::Null);

    // Scale by 2 with the model: the library's A1111 Extras result, pixel for pixel.
    let src = image(13, 10);
    let b64 = b64encode(&encode_png(&src, &[]).unwrap());
    let (status, body) = post_json(
        &server,
        "/sdapi/v1/extra-single-image",
        &json!({"image": format!("data:image/png;base64,{b64}"), "upscaling_resize": 2,
                "upscaler_1": "4x-compact"}),
    );
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["image"].as_str().unwrap())).unwrap();
    let model = UpscalerModel::load(fixture("srvgg_x4.safetensors"), &Device::Cpu, DType::F32);
    let model = Upscaler::Model(model.unwrap().into());
    let want = extras_upscale(
        &src,
        ExtrasResize::By(2.0),
        Some(("4x-compact", &model)),
        None,
        TileOptions::default(),
    )
    .unwrap();
    assert_eq!((png.image.width, png.image.height), (24, 16));
    assert_eq!(png.image, want.image);
    assert_eq!(
        body["html_info"],
        "<p>Postprocess upscale by: 2.0, Postprocess upscaler: 4x-compact</p>"
    );

    // To a size, cropped, with a second upscaler blended in.
    let (status, body) = post_json(
        &server,
        "/sdapi/v1/extra-single-image",
        &json!({"image": b64, "resize_mode": 1, "upscaling_resize_w": 20,
                "upscaling_resize_h": 20, "upscaler_1": "RealESRGAN_x2", "upscaler_2": "Nearest",
                "extras_upscaler_2_visibility": 0.5}),
    );
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["image"].as_str().unwrap())).unwrap();
    assert_eq!((png.image.width, png.image.height), (20, 20));
    let info = body["html_info"].as_str().unwrap();
    assert!(info.contains("Postprocess upscaler 2: Nearest"), "{info}");

    // Bad requests name their field.
    let bad = |req: Value, status: u16, field: &str| {
        let (s, e) = post_json(&server, "/sdapi/v1/extra-single-image", &req);
        assert_eq!((s, e["field"].as_str()), (status, Some(field)), "{e}");
        e["detail"].as_str().unwrap().to_string()
    };
    let detail = bad(
        json!({"image": b64, "upscaler_1": "4x-nope"}),
        404,
        "upscaler_1",
    );
    assert!(detail.contains("4x-compact"), "{detail}");
    bad(json!({"image": b64, "upscaler_2": "x"}), 404, "upscaler_2");
    bad(
        json!({"image": "bm90IGFuIGltYWdl", "upscaler_1": "Lanczos"}),
        400,
        "image",
    );
    bad(json!({"upscaler_1": "Lanczos"}), 422, "image");
    bad(json!({"image": b64, "resize_mode": 2}), 400, "resize_mode");
    bad(
        json!({"image": b64, "upscaling_resize": 9}),
        400,
        "upscaling_resize",
    );
    bad(
        json!({"image": b64, "gfpgan_visibility": 0.5}),
        400,
        "gfpgan_visibility",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_a_folder_only_the_resizers_are_listed() {
    let server = start(config());
    let (status, list) = get_json(&server, "/sdapi/v1/upscalers");
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 3);
    let img = b64encode(&encode_png(&image(8, 8), &[]).unwrap());
    let (status, body) = post_json(
        &server,
        "/sdapi/v1/extra-single-image",
        &json!({"image": img, "upscaler_1": "Nearest", "upscaling_resize": 2}),
    );
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["image"].as_str().unwrap())).unwrap();
    assert_eq!((png.image.width, png.image.height), (16, 16));
    let (s, e) = post_json(
        &server,
        "/sdapi/v1/extra-single-image",
        &json!({"image": img, "upscaler_1": "4x-compact"}),
    );
    assert_eq!(s, 404);
    assert!(
        e["detail"].as_str().unwrap().contains("--upscaler-dir"),
        "{e}"
    );
}
