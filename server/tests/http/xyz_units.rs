//! The X/Y/Z plot with what A1111 runs in every cell beside the axes: ControlNet units
//! (`alwayson_scripts.controlnet`, tests/fixtures/controlnet on tiny-sd1) and an SDXL refiner
//! (`refiner_checkpoint`, tiny-sdxl + tiny-sdxl-refiner). Each cell equals the single txt2img
//! with that cell's settings and the same unit or refiner; a Checkpoint name cell gets the unit
//! loaded for its own checkpoint, and one whose base the unit does not fit is a 400 naming the
//! unit's model field.

use std::path::PathBuf;

use kiln_models::image::grid::Annotations;
use kiln_models::image::infotext::InfoText;
use kiln_models::image::png::decode_png;
use kiln_models::image::RgbImage;
use kiln_runtime::DeviceChoice;
use kiln_server::{ModelSet, ServerConfig};
use serde_json::{json, Value};

use crate::common::{b64decode, b64encode, crop, post_json, start, xyz_args};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn config(models: &[PathBuf]) -> ServerConfig {
    let mut c = ServerConfig::new(ModelSet::List(models.to_vec()));
    c.device = DeviceChoice::Cpu;
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.controlnet_dir = Some(fixtures().join("controlnet"));
    c
}

fn image(v: &Value) -> RgbImage {
    decode_png(&b64decode(v.as_str().unwrap())).unwrap().image
}

fn infotext(v: &Value) -> String {
    let png = decode_png(&b64decode(v.as_str().unwrap())).unwrap();
    png.text("parameters").unwrap().to_string()
}

/// `script_args` with X and Y axes (type index, values, dropdown) and include_lone_images.
fn plot_args(x: (u32, &str, Value), y: (u32, &str, Value)) -> Value {
    xyz_args([x, y, (0, "", json!([]))], true, false, 0)
}

/// Runs the plot on `base` (32 px cells, axes labelled `x` and `y`), then checks each cell (x
/// fastest) in the grid and against the single txt2img of `base` with `single(ix, iy)` applied;
/// returns the cells.
fn cells_equal_singles(
    server: &kiln_server::Server,
    base: &Value,
    args: Value,
    (x, y): (&[&str], &[&str]),
    single: impl Fn(&mut Value, usize, usize),
) -> Vec<Value> {
    let mut plot = base.clone();
    plot["script_name"] = json!("x/y/z plot");
    plot["script_args"] = args;
    let (s, body) = post_json(server, "/sdapi/v1/txt2img", &plot);
    assert_eq!(s, 200, "{body}");
    let images = body["images"].as_array().unwrap().clone();
    assert_eq!(images.len(), 1 + x.len() * y.len());
    let grid = image(&images[0]);
    let texts = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let layout = Annotations::layout(32, 32, &texts(x), &texts(y), 0).unwrap();
    assert_eq!((grid.width, grid.height), (layout.width, layout.height));
    for (i, cell) in images[1..].iter().enumerate() {
        let (ix, iy) = (i % x.len(), i / x.len());
        let (px, py) = (layout.pad_left + ix * 32, layout.pad_top + iy * 32);
        assert_eq!(
            crop(&grid, px, py, 32, 32),
            image(cell).data,
            "cell {i} in the grid"
        );
        let mut req = base.clone();
        single(&mut req, ix, iy);
        let (s, alone) = post_json(server, "/sdapi/v1/txt2img", &req);
        assert_eq!(s, 200, "{alone}");
        assert_eq!(image(&alone["images"][0]), image(cell), "cell {i}");
        // The plot re-encodes each cell with its infotext parsed back.
        let single_text = InfoText::parse(&infotext(&alone["images"][0])).format();
        assert_eq!(single_text, infotext(cell), "cell {i}");
    }
    images[1..].to_vec()
}

#[test]
fn plot_cells_run_with_the_controlnet_unit_on_each_checkpoint() {
    let sd2 = sd2_pipeline();
    let models = [
        fixtures().join("tiny-sd1"),
        sd2.clone(),
        fixtures().join("tiny-sdxl"),
    ];
    let server = start(config(&models));
    let control = b64encode(&std::fs::read(fixtures().join("controlnet/control.png")).unwrap());
    let unit = json!({"image": control, "module": "none", "model": "sd1-a", "weight": 0.8});
    let base = json!({"prompt": "a red circle", "width": 32, "height": 32, "steps": 2, "seed": 42,
        "override_settings": {"sd_model_checkpoint": "tiny-sd1"},
        "alwayson_scripts": {"controlnet": {"args": [unit]}}});

    // Steps (4) on X, Checkpoint name (11) on Y: the second row runs on tiny-sd2 (whose tiny
    // UNet has tiny-sd1's widths, so the unit fits), with the ControlNet opened for it.
    let checkpoints = ["tiny-sd1", "kiln-xyz-sd2"];
    let args = plot_args((4, "1,2", json!([])), (11, "", json!(checkpoints)));
    let labels: (&[&str], &[&str]) = (&["Steps: 1", "Steps: 2"], &checkpoints);
    let cells = cells_equal_singles(&server, &base, args, labels, |req, ix, iy| {
        req["steps"] = json!(ix + 1);
        req["override_settings"]["sd_model_checkpoint"] = json!(checkpoints[iy]);
    });
    assert!(infotext(&cells[3]).contains("ControlNet 0: \"Module: none, Model: sd1-a"));
    // The unit changes the image: a plot that dropped it would not match the singles above.
    let mut plain = base.clone();
    plain.as_object_mut().unwrap().remove("alwayson_scripts");
    plain["steps"] = json!(2);
    let (s, alone) = post_json(&server, "/sdapi/v1/txt2img", &plain);
    assert_eq!(s, 200, "{alone}");
    assert_ne!(image(&alone["images"][0]), image(&cells[1]));

    // An SD 1.x unit does not fit the SDXL checkpoint's cells.
    let mut plot = base.clone();
    plot["script_name"] = json!("x/y/z plot");
    plot["script_args"] = plot_args(
        (4, "1", json!([])),
        (11, "", json!(["tiny-sd1", "tiny-sdxl"])),
    );
    let (s, err) = post_json(&server, "/sdapi/v1/txt2img", &plot);
    assert_eq!(s, 400, "{err}");
    assert_eq!(err["field"], "alwayson_scripts.controlnet.args[0].model");
    let detail = err["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"tiny-sdxl\"") && detail.contains("another base model"),
        "{detail}"
    );
    drop(server);
    std::fs::remove_dir_all(sd2.parent().unwrap()).unwrap();
}

/// tests/fixtures/tiny-sd2's parts (v-prediction; no VAE of its own) as a pipeline folder with
/// tiny-sd1's VAE and model_index.json: a second SD checkpoint the sd1 ControlNets fit.
fn sd2_pipeline() -> PathBuf {
    let root = std::env::temp_dir().join(format!("kiln-xyz-units-{}", std::process::id()));
    let dir = root.join("kiln-xyz-sd2");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&dir).unwrap();
    let (sd1, sd2) = (fixtures().join("tiny-sd1"), fixtures().join("tiny-sd2"));
    std::fs::copy(sd1.join("model_index.json"), dir.join("model_index.json")).unwrap();
    for part in ["scheduler", "text_encoder", "tokenizer", "unet"] {
        std::os::unix::fs::symlink(sd2.join(part), dir.join(part)).unwrap();
    }
    std::os::unix::fs::symlink(sd1.join("vae"), dir.join("vae")).unwrap();
    dir
}

#[test]
fn plot_cells_run_with_the_refiner() {
    let server = start(config(&[
        fixtures().join("tiny-sdxl"),
        fixtures().join("tiny-sdxl-refiner"),
    ]));
    let base = json!({"prompt": "a red circle", "negative_prompt": "dark", "width": 32,
        "height": 32, "steps": 4, "seed": 5,
        "override_settings": {"sd_model_checkpoint": "tiny-sdxl"},
        "refiner_checkpoint": "tiny-sdxl-refiner", "refiner_switch_at": 0.5});
    // CFG Scale (6) on X, Sampler (9) on Y.
    let samplers = ["Euler", "DPM++ 2M"];
    let args = plot_args((6, "3,7", json!([])), (9, "", json!(samplers)));
    let labels: (&[&str], &[&str]) = (&["CFG Scale: 3.0", "CFG Scale: 7.0"], &samplers);
    let cells = cells_equal_singles(&server, &base, args, labels, |req, ix, iy| {
        req["cfg_scale"] = json!([3, 7][ix]);
        req["sampler_name"] = json!(samplers[iy]);
    });
    let text = infotext(&cells[0]);
    assert!(
        text.contains("Refiner: tiny-sdxl-refiner [") && text.contains("Refiner switch at: 0.5"),
        "{text}"
    );
    // The refiner changes the image: a plot that dropped it would not match the singles above.
    let mut plain = base.clone();
    plain.as_object_mut().unwrap().remove("refiner_checkpoint");
    plain["cfg_scale"] = json!(3);
    plain["sampler_name"] = json!("Euler");
    let (s, alone) = post_json(&server, "/sdapi/v1/txt2img", &plain);
    assert_eq!(s, 200, "{alone}");
    assert_ne!(image(&alone["images"][0]), image(&cells[0]));
}
