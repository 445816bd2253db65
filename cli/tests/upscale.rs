//! `kiln upscale` end to end on the tiny upscaler fixtures: the model's image as the library makes
//! it, plain resizers, --scale to any factor, and bad input (clear error, non-zero exit, no output
//! file, no temporary left behind).

use std::path::{Path, PathBuf};
use std::process::Output;

use kiln_models::image::png::{decode_png, encode_png};
use kiln_models::image::RgbImage;
use kiln_models::upscale::{TileOptions, UpscalerModel};
use kiln_runtime::{DType, Device};

mod common;
use common::{fixtures, kiln, stderr, temp_dir};

fn fixture(name: &str) -> PathBuf {
    fixtures().join("upscalers").join(name)
}

fn image() -> RgbImage {
    let data = (0..13 * 10 * 3).map(|i| (i * 53 % 256) as u8).collect();
    RgbImage::new(13, 10, data).unwrap()
}

/// `kiln --device cpu upscale -i DIR/in.png -o DIR/out.png` + `extra`.
fn upscale(dir: &Path, extra: &[&str]) -> Output {
    std::fs::write(dir.join("in.png"), encode_png(&image(), &[]).unwrap()).unwrap();
    kiln()
        .args(["--device", "cpu", "upscale", "-i"])
        .arg(dir.join("in.png"))
        .arg("-o")
        .arg(dir.join("out.png"))
        .args(extra)
        .output()
        .unwrap()
}

fn read(path: &Path) -> RgbImage {
    decode_png(&std::fs::read(path).unwrap()).unwrap().image
}

#[test]
fn a_model_upscales_by_its_factor_and_any_other() {
    let dir = temp_dir("model");
    let model = fixture("rrdb_x4_old.safetensors");
    let lib = UpscalerModel::load(&model, &Device::Cpu, DType::F32).unwrap();
    for (flags, tiles) in [
        (&["--tile", "0"][..], TileOptions::WHOLE),
        (&[][..], TileOptions::default()),
        (
            &["--tile", "8", "--tile-overlap", "3"][..],
            TileOptions::new(8, 3).unwrap(),
        ),
    ] {
        let mut args = vec!["--model", model.to_str().unwrap()];
        args.extend_from_slice(flags);
        let out = upscale(&dir, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        let got = read(&dir.join("out.png"));
        assert_eq!((got.width, got.height), (52, 40));
        assert_eq!(got, lib.upscale(&image(), tiles).unwrap(), "{flags:?}");
    }
    // A small tile without --tile-overlap gets an overlap that fits it.
    let out = upscale(&dir, &["--model", model.to_str().unwrap(), "--tile", "8"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = upscale(
        &dir,
        &["--model", model.to_str().unwrap(), "--scale", "1.5"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = read(&dir.join("out.png"));
    assert_eq!((got.width, got.height), (20, 15));
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plain_resizers_need_a_scale() {
    let dir = temp_dir("resize");
    let out = upscale(&dir, &["--model", "nearest", "--scale", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = read(&dir.join("out.png"));
    assert_eq!((got.width, got.height), (26, 20));
    assert_eq!(got.data[..3], image().data[..3]);
    assert_eq!(got.data[3..6], image().data[..3]);
    let out = upscale(&dir, &["--model", "lanczos", "--scale", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read(&dir.join("out.png")).width, 39);
    std::fs::remove_file(dir.join("out.png")).unwrap();
    let out = upscale(&dir, &["--model", "lanczos"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--scale"), "{}", stderr(&out));
    assert!(!dir.join("out.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn fails(dir: &Path, out: Output, expect: &str) {
    assert!(!out.status.success(), "should fail: {expect}");
    let err = stderr(&out);
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["in.png"], "no output or temporary file");
}

#[test]
fn bad_input_is_a_clear_error_with_no_output() {
    let dir = temp_dir("bad");
    let pth = dir.join("RealESRGAN_x4plus.pth");
    std::fs::write(&pth, b"\x80\x02}q\x00.").unwrap();
    let out = upscale(&dir, &["--model", pth.to_str().unwrap()]);
    std::fs::remove_file(&pth).unwrap();
    fails(&dir, out, "params_ema");
    let vae = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny-sd1/vae/diffusion_pytorch_model.safetensors");
    let out = upscale(&dir, &["--model", vae.to_str().unwrap()]);
    fails(&dir, out, "not an upscaler");
    let model = fixture("srvgg_x4.safetensors");
    let out = upscale(
        &dir,
        &[
            "--model",
            model.to_str().unwrap(),
            "--tile",
            "8",
            "--tile-overlap",
            "4",
        ],
    );
    fails(&dir, out, "twice the overlap");
    let out = upscale(&dir, &["--model", model.to_str().unwrap(), "--scale=0"]);
    fails(&dir, out, "--scale");
    let out = kiln()
        .args(["--device", "cpu", "upscale", "-i"])
        .arg(dir.join("missing.png"))
        .arg("-o")
        .arg(dir.join("out.png"))
        .args(["--model", "nearest", "--scale", "2"])
        .output()
        .unwrap();
    fails(&dir, out, "missing.png");
    std::fs::remove_dir_all(&dir).unwrap();
}
