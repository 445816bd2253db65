//! `kiln generate -i IN --outpaint L,T,R,B`: the canvas grows by the borders (rounded up to a
//! multiple of 8), the border is generated, the original's pixels deeper than the blend band are
//! kept exactly, and bad flags are clear errors with no output file.

use std::path::Path;
use std::process::Output;

use kiln_models::image::png::decode_png;
use kiln_models::image::read_image;

mod common;
use common::{assert_ok, assert_refused, generate_on_cpu, temp_dir, tiny};

fn generate(dir: &Path, extra: &[&str]) -> Output {
    generate_on_cpu(&tiny())
        .args(["-p", "a red circle", "-s", "3", "--steps", "2", "-o"])
        .arg(dir.join("out.png"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn outpainting_extends_the_canvas_and_keeps_the_original() {
    let dir = temp_dir("ok");
    let init = tiny().join("init.png");
    let original = read_image(&init).unwrap();
    assert_eq!((original.width, original.height), (32, 32));
    let out = generate(
        &dir,
        &[
            "-i",
            init.to_str().unwrap(),
            "--outpaint",
            "16,0,8,0",
            "--outpaint-blur",
            "4",
        ],
    );
    assert_ok(&out);
    let png = decode_png(&std::fs::read(dir.join("out.png")).unwrap()).unwrap();
    let img = png.image;
    assert_eq!((img.width, img.height), (56, 32));
    let px = |data: &[u8], w: usize, x: usize, y: usize| {
        let i = (y * w + x) * 3;
        [data[i], data[i + 1], data[i + 2]]
    };
    // Deeper than the 4-pixel band from the extended left and right edges: the input's pixels.
    for y in 0..32 {
        for x in 4..28 {
            assert_eq!(
                px(&img.data, 56, 16 + x, y),
                px(&original.data, 32, x, y),
                "({x}, {y})"
            );
        }
    }
    // The new border is generated, not a copy of the stretched edge.
    let border_differs = (0..32).any(|y| px(&img.data, 56, 0, y) != px(&original.data, 32, 0, y));
    assert!(border_differs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_outpaint_flags_are_clear_errors_with_no_output() {
    let dir = temp_dir("bad");
    let init = tiny().join("init.png");
    let init = init.to_str().unwrap();
    let mask = tiny().join("mask.png");
    for (extra, expect) in [
        (vec!["--outpaint", "8,0,8,0"], "-i"),
        (
            vec!["-i", init, "--outpaint", "8,0,8"],
            "LEFT,TOP,RIGHT,BOTTOM",
        ),
        (
            vec!["-i", init, "--outpaint", "0,0,0,0"],
            "nothing to extend",
        ),
        (
            vec![
                "-i",
                init,
                "--outpaint",
                "8,0,8,0",
                "--mask",
                mask.to_str().unwrap(),
            ],
            "--mask",
        ),
        (vec!["-i", init, "--outpaint", "8,0,8,0", "-W", "64"], "-W"),
    ] {
        let out = generate(&dir, &extra);
        assert_refused(&out, &format!("{extra:?}"), expect, &dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
