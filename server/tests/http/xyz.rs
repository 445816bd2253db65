//! A1111's X/Y/Z plot over the API: `script_name: "x/y/z plot"` with the script's positional
//! `script_args` (axis types as indices into A1111's txt2img list), the grid first and then
//! each z value's grid and each cell as asked, each cell equal to the plain txt2img with its
//! settings; bad axes and grids over `--max-pixels` are 400s naming `script_args`.

use kiln_models::image::grid::Annotations;
use kiln_models::image::infotext::{InfoText, PNG_KEYWORD};
use kiln_models::image::png::{decode_png, encode_png, DecodedPng};
use kiln_models::image::RgbImage;
use serde_json::{json, Value};

use std::sync::Arc;

use super::common::{
    b64decode, b64encode, config, crop, get_json, post_json, small, start, step, wait_for, xyz_args,
};

fn png(v: &Value) -> DecodedPng {
    decode_png(&b64decode(v.as_str().unwrap())).unwrap()
}

/// Steps (index 4) "1,2" on X, CFG Scale (index 6) "3,5,7" on Y, include_lone_images.
fn plot_body() -> Value {
    let mut body = small("a red circle", 1);
    body["script_name"] = json!("X/Y/Z plot");
    let axes = [
        (4, "1,2", json!([])),
        (6, "3,5,7", json!([])),
        (0, "", json!([])),
    ];
    body["script_args"] = xyz_args(axes, true, false, 0);
    body
}

#[test]
fn xyz_plot_returns_the_grid_then_each_single_generation() {
    let server = start(config());
    let (s, scripts) = get_json(&server, "/sdapi/v1/scripts");
    assert_eq!(s, 200);
    assert_eq!(scripts["txt2img"], json!(["x/y/z plot"]));
    assert_eq!(scripts["img2img"], json!(["x/y/z plot"]));

    let (s, body) = post_json(&server, "/sdapi/v1/txt2img", &plot_body());
    assert_eq!(s, 200, "{body}");
    let images = body["images"].as_array().unwrap();
    assert_eq!(images.len(), 1 + 6);
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["infotexts"].as_array().unwrap().len(), 7);
    assert_eq!(info["index_of_first_image"], 1);

    let grid = png(&images[0]);
    let labels = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let layout = Annotations::layout(
        64,
        64,
        &labels(&["Steps: 1", "Steps: 2"]),
        &labels(&["CFG Scale: 3.0", "CFG Scale: 5.0", "CFG Scale: 7.0"]),
        0,
    )
    .unwrap();
    assert_eq!(
        (grid.image.width, grid.image.height),
        (48 + 2 * 64, layout.pad_top + 3 * 64)
    );
    let grid_info = InfoText::parse(grid.text(PNG_KEYWORD).unwrap());
    assert_eq!(grid_info.get("Script"), Some("X/Y/Z plot"));
    assert_eq!(grid_info.get("X Type"), Some("Steps"));
    assert_eq!(grid_info.get("Y Values"), Some("3,5,7"));

    for (i, image) in images[1..].iter().enumerate() {
        let cell = png(image);
        let (ix, iy) = (i % 2, i / 2);
        let cell_info = InfoText::parse(cell.text(PNG_KEYWORD).unwrap());
        assert_eq!(cell_info.get("Steps"), Some(["1", "2"][ix]));
        assert_eq!(cell_info.get("CFG scale"), Some(["3", "5", "7"][iy]));
        assert_eq!(
            crop(&grid.image, 48 + ix * 64, layout.pad_top + iy * 64, 64, 64),
            cell.image.data,
            "cell {i} in the grid"
        );
    }
    // The last cell (steps 2, CFG 7) is the plain request with those settings.
    let mut single = small("a red circle", 2);
    single["cfg_scale"] = json!(7);
    let (s, alone) = post_json(&server, "/sdapi/v1/txt2img", &single);
    assert_eq!(s, 200, "{alone}");
    assert_eq!(png(&alone["images"][0]).image, png(&images[6]).image);

    // Without include_lone_images: the grid alone.
    let mut body = plot_body();
    body["script_args"][10] = json!(false);
    let (s, body) = post_json(&server, "/sdapi/v1/txt2img", &body);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["images"].as_array().unwrap().len(), 1);
    assert_eq!(png(&body["images"][0]).image, grid.image);
}

#[test]
fn img2img_plots_denoising_at_its_img2img_index() {
    let server = start(config());
    let data = (0..64 * 64).flat_map(|_| [200, 30, 30]).collect();
    let init = b64encode(&encode_png(&RgbImage::new(64, 64, data).unwrap(), &[]).unwrap());
    let mut req = small("a blue square", 2);
    req["init_images"] = json!([init]);
    let mut plot = req.clone();
    plot["script_name"] = json!("x/y/z plot");
    // img2img's list has Image CFG Scale and no hires entries: Denoising is index 22 there.
    plot["script_args"] = json!([22, "0.5, 1", [], 0, "", [], 0, "", [], true, true]);
    let (s, body) = post_json(&server, "/sdapi/v1/img2img", &plot);
    assert_eq!(s, 200, "{body}");
    let images = body["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    let grid = png(&images[0]);
    // No row labels: no label column.
    assert_eq!(grid.image.width, 2 * 64);
    for (i, strength) in [0.5, 1.0].into_iter().enumerate() {
        let cell = png(&images[1 + i]);
        let mut single = req.clone();
        single["denoising_strength"] = json!(strength);
        let (s, alone) = post_json(&server, "/sdapi/v1/img2img", &single);
        assert_eq!(s, 200, "{alone}");
        assert_eq!(
            png(&alone["images"][0]).image,
            cell.image,
            "strength {strength}"
        );
    }
    assert_ne!(png(&images[1]).image, png(&images[2]).image);
    // On txt2img, Denoising belongs to hires fix.
    let mut t = small("a blue square", 1);
    t["script_name"] = json!("x/y/z plot");
    t["script_args"] = json!([23, "0.5"]);
    let (s, err) = post_json(&server, "/sdapi/v1/txt2img", &t);
    assert_eq!(s, 400, "{err}");
    assert!(
        err["detail"]
            .as_str()
            .unwrap()
            .contains("varies the hires fix"),
        "{err}"
    );
}

#[test]
fn bad_script_args_and_large_grids_are_refused() {
    let mut c = config();
    c.max_pixels = 64 * 64 * 4;
    let server = start(c);
    let cases = [
        (json!([2, "1,2"]), "Var. seed"),
        (json!([4, "1,two"]), "Steps value \"two\""),
        (json!([26, "Latent"]), "varies the hires fix"),
        (
            json!([11, "no-such-model", ["no-such-model"]]),
            "no-such-model",
        ),
        (json!([4, "1,2", [], 6, "3,5,7"]), "over the limit"),
    ];
    for (args, expect) in cases {
        let mut body = small("a red circle", 1);
        body["script_name"] = json!("x/y/z plot");
        body["script_args"] = args.clone();
        let (s, err) = post_json(&server, "/sdapi/v1/txt2img", &body);
        assert_eq!(s, 400, "{args}: {err}");
        assert_eq!(err["field"], "script_args", "{args}: {err}");
        let detail = err["detail"].as_str().unwrap();
        assert!(detail.contains(expect), "{args}: {detail}");
    }
    let mut body = small("a red circle", 1);
    body["script_name"] = json!("prompt matrix");
    let (s, err) = post_json(&server, "/sdapi/v1/txt2img", &body);
    assert_eq!(
        (s, err["field"].as_str()),
        (400, Some("script_name")),
        "{err}"
    );
}

#[test]
fn an_interrupt_stops_the_plot_and_the_cells_not_run_are_black() {
    let mut c = config();
    c.max_steps = 10_000;
    let server = Arc::new(start(c));
    let mut body = small("a red circle", 1);
    body["script_name"] = json!("x/y/z plot");
    body["script_args"] = json!([4, "2, 1000, 2", [], 0, "", [], 0, "", [], true, true]);
    let s = server.clone();
    let job = std::thread::spawn(move || post_json(&s, "/sdapi/v1/txt2img", &body));
    // The first cell has 2 steps: a step past 2 is the long second cell.
    wait_for(120, "the second cell to step", || {
        job.is_finished() || step(&server) >= 3
    });
    if job.is_finished() {
        panic!("the plot ended early: {:?}", job.join().unwrap());
    }
    post_json(&server, "/sdapi/v1/interrupt", &json!({}));
    let (s, body) = job.join().unwrap();
    assert_eq!(s, 200, "{body}");
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["interrupted"], true);
    let images = body["images"].as_array().unwrap();
    assert_eq!(images.len(), 1 + 3);
    assert_eq!(png(&images[0]).image.width, 3 * 64);
    assert!(png(&images[1]).image.data.iter().any(|&v| v != 0));
    assert!(png(&images[3]).image.data.iter().all(|&v| v == 0));
}

/// A1111's answer with a Z axis: the grid of the z grids side by side under the z labels, then
/// (`include_sub_grids`, script_args[11]) one grid per z value with `margin_size`
/// (script_args[13]) between its cells, then (`include_lone_images`, [10]) every cell.
#[test]
fn a_z_axis_returns_one_sub_grid_per_z_value() {
    let server = start(config());
    let mut body = small("a red circle", 1);
    body["script_name"] = json!("x/y/z plot");
    // Steps "1,2" on X, CFG Scale "3,5" on Y, Seed "1,2,3" on Z, 4 px margins.
    let axes = [
        (4, "1,2", json!([])),
        (6, "3,5", json!([])),
        (1, "1,2,3", json!([])),
    ];
    body["script_args"] = xyz_args(axes, true, true, 4);
    let (s, answer) = post_json(&server, "/sdapi/v1/txt2img", &body);
    assert_eq!(s, 200, "{answer}");
    let images = answer["images"].as_array().unwrap();
    assert_eq!(images.len(), 1 + 3 + 12);
    let info: Value = serde_json::from_str(answer["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["infotexts"].as_array().unwrap().len(), 16);

    let texts = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let sub = Annotations::layout(
        64,
        64,
        &texts(&["Steps: 1", "Steps: 2"]),
        &texts(&["CFG Scale: 3.0", "CFG Scale: 5.0"]),
        4,
    )
    .unwrap();
    assert_eq!(
        (sub.width, sub.height),
        (48 + 2 * 64 + 4, sub.pad_top + 2 * 64 + 4)
    );
    let main = Annotations::layout(
        sub.width,
        sub.height,
        &texts(&["Seed: 1", "Seed: 2", "Seed: 3"]),
        &[String::new()],
        0,
    )
    .unwrap();
    let grid = png(&images[0]);
    assert_eq!(
        (grid.image.width, grid.image.height),
        (3 * sub.width, main.pad_top + sub.height)
    );
    let grid_info = InfoText::parse(grid.text(PNG_KEYWORD).unwrap());
    assert_eq!(grid_info.get("Z Type"), Some("Seed"));
    for iz in 0..3 {
        let z = png(&images[1 + iz]);
        assert_eq!((z.image.width, z.image.height), (sub.width, sub.height));
        let (w, h) = (sub.width, sub.height);
        let part = crop(&grid.image, iz * w, main.pad_top, w, h);
        assert_eq!(part, z.image.data, "z grid {iz}");
        let z_info = InfoText::parse(z.text(PNG_KEYWORD).unwrap());
        assert_eq!(z_info.get("Y Type"), Some("CFG Scale"));
        assert_eq!(z_info.get("Z Type"), None);
        assert_eq!(z_info.get("Seed"), Some(["1", "2", "3"][iz]));
        // Its cells (x fastest) with the margin between them.
        for (ix, iy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let cell = png(&images[4 + iz * 4 + iy * 2 + ix]);
            let (x, y) = (sub.pad_left + ix * 68, sub.pad_top + iy * 68);
            assert_eq!(crop(&z.image, x, y, 64, 64), cell.image.data);
        }
    }

    // Sub grids without the cells; neither; and without a Z axis, the one sub grid A1111 gives.
    for (lone, subs, z, count) in [
        (false, true, "1,2,3", 1 + 3),
        (false, false, "1,2,3", 1),
        (false, true, "", 1 + 1),
    ] {
        let mut b = body.clone();
        b["script_args"][6] = json!(if z.is_empty() { 0 } else { 1 });
        b["script_args"][7] = json!(z);
        b["script_args"][10] = json!(lone);
        b["script_args"][11] = json!(subs);
        let (s, answer) = post_json(&server, "/sdapi/v1/txt2img", &b);
        assert_eq!(s, 200, "{answer}");
        let got = answer["images"].as_array().unwrap();
        assert_eq!(got.len(), count, "lone {lone} subs {subs} z {z:?}");
        if z.is_empty() {
            // With one z value the sub grid is the grid.
            assert_eq!(png(&got[1]).image, png(&got[0]).image);
        } else {
            assert_eq!(png(&got[0]).image, grid.image);
        }
    }
}
