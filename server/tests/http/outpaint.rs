//! img2img with A1111's "outpainting mk2" script: the answer is the init image extended towards
//! the asked directions, its pixels kept deeper than the blend band; a bad direction is a 400
//! naming its `script_args` slot.

use std::path::PathBuf;

use kiln_models::image::png::decode_png;
use kiln_models::image::read_image;
use kiln_runtime::DeviceChoice;
use kiln_server::{ModelSet, ServerConfig};
use serde_json::json;

use crate::common::{b64decode, b64encode, post_json, start};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sd1")
}

#[test]
fn outpainting_mk2_extends_the_image_and_keeps_it() {
    let mut c = ServerConfig::new(ModelSet::Single(tiny()));
    c.device = DeviceChoice::Cpu;
    c.listen = "127.0.0.1:0".parse().unwrap();
    let server = start(c);
    let init_png = std::fs::read(tiny().join("init.png")).unwrap();
    let original = read_image(&tiny().join("init.png")).unwrap();
    let mut request = json!({"prompt": "a red circle", "steps": 2, "seed": 4,
        "init_images": [b64encode(&init_png)], "denoising_strength": 1.0,
        "script_name": "Outpainting mk2",
        "script_args": ["", 16, 4, ["left", "right"], 1.0, 0.05]});
    let (status, body) = post_json(&server, "/sdapi/v1/img2img", &request);
    assert_eq!(status, 200, "{body}");
    let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    let img = png.image;
    assert_eq!((img.width, img.height), (64, 32));
    for y in 0..32 {
        for x in 4..28 {
            let (a, b) = ((y * 64 + 16 + x) * 3, (y * 32 + x) * 3);
            assert_eq!(img.data[a..a + 3], original.data[b..b + 3], "({x}, {y})");
        }
    }
    request["script_args"] = json!(["", 16, 4, ["sideways"], 1.0, 0.05]);
    let (status, body) = post_json(&server, "/sdapi/v1/img2img", &request);
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("script_args[3]"), "{body}");
}
