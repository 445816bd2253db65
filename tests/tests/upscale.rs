//! ESRGAN / Real-ESRGAN upscalers against the PyTorch reference (fixtures from
//! tools/make_upscaler_fixtures.py: tiny random RRDBNets x4 (BasicSR names and the old ESRGAN
//! layout), x2 (under `params_ema.`) and x1, and an SRVGGNetCompact x4; outputs for one 13x10 image
//! in float64 from the f32 weights, x2 / x1 reflect-padded as Real-ESRGAN pads).
//!
//! Tolerances, |err| <= atol + rtol |want| (outputs within about [-0.5, 3.4]):
//! - f32, CPU and GPU: atol 2e-5, rtol 1e-5 (about 40 convolutions of f32 rounding against
//!   float64; measured max 2.4e-6 (x2) on the CPU and on llvmpipe, 4e-7 or less for the others).
//! - f16 weights and activations on the GPU: atol 1e-2, rtol 1e-2 (every activation rounded to
//!   f16; measured max 3.5e-3 (x2), 1.2e-3 (x4), 7e-4 (compact) on llvmpipe).

use std::path::{Path, PathBuf};

use kiln_kernels::testing::{assert_close, with_gpu};
use kiln_models::image::RgbImage;
use kiln_models::upscale::{
    Architecture, Planes, RrdbConfig, SrvggConfig, TileOptions, Upscaler, UpscalerModel,
};
use kiln_runtime::loader::write_safetensors;
use kiln_runtime::{DType, Device};
use kiln_tests::golden::{f32s, max_err};
use kiln_tests::{temp, with_f16_gpu};
use safetensors::{Dtype, SafeTensors};

const F32_TOL: (f32, f32) = (2e-5, 1e-5);
const F16_TOL: (f32, f32) = (1e-2, 1e-2);

fn fixtures() -> PathBuf {
    kiln_tests::fixtures().join("upscalers")
}

/// A golden tensor as planes (batch 1).
fn golden(name: &str) -> Planes {
    let bytes = std::fs::read(fixtures().join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    let &[1, c, h, w] = t.shape() else {
        panic!("{name}: shape {:?}", t.shape())
    };
    Planes::new(c, h, w, f32s(t.data())).unwrap()
}

/// Every fixture file against its golden output: (file, golden name).
const CASES: [(&str, &str); 5] = [
    ("rrdb_x4.safetensors", "rrdb_x4"),
    ("rrdb_x4_old.safetensors", "rrdb_x4"),
    ("rrdb_x2.safetensors", "rrdb_x2"),
    ("rrdb_x1.safetensors", "rrdb_x1"),
    ("srvgg_x4.safetensors", "srvgg_x4"),
];

fn check(device: &Device, dtype: DType, (atol, rtol): (f32, f32)) {
    let image = golden("image");
    for (file, want) in CASES {
        let model = UpscalerModel::load(fixtures().join(file), device, dtype).unwrap();
        assert_eq!(model.dtype(), dtype);
        let want = golden(want);
        let got = model.upscale_planes(&image, TileOptions::WHOLE).unwrap();
        assert_eq!((got.height, got.width), (want.height, want.width), "{file}");
        let what = format!("{} {dtype:?} {file}", device.name());
        eprintln!("{what}: max |err| {:e}", max_err(&got.data, &want.data));
        assert_close(&what, &got.data, &want.data, atol, rtol);
    }
}

#[test]
fn matches_pytorch_on_cpu() {
    check(&Device::Cpu, DType::F32, F32_TOL);
}

#[test]
fn matches_pytorch_on_gpu_f32() {
    with_gpu(|gpu| check(gpu, DType::F32, F32_TOL));
}

#[test]
fn matches_pytorch_on_gpu_f16() {
    with_f16_gpu(|gpu| check(gpu, DType::F16, F16_TOL));
}

#[test]
fn sizes_are_read_from_the_shapes() {
    let arch = |file: &str| {
        UpscalerModel::load(fixtures().join(file), &Device::Cpu, DType::F32)
            .unwrap()
            .architecture()
    };
    let rrdb = |num_block, num_up, unshuffle| {
        Architecture::Rrdb(RrdbConfig {
            in_ch: 3 * unshuffle * unshuffle,
            out_ch: 3,
            num_feat: 8,
            num_block,
            num_grow_ch: 4,
            num_up,
            unshuffle,
        })
    };
    assert_eq!(arch("rrdb_x4.safetensors"), rrdb(2, 2, 1));
    assert_eq!(arch("rrdb_x4_old.safetensors"), rrdb(2, 2, 1));
    assert_eq!(arch("rrdb_x2.safetensors"), rrdb(2, 2, 2));
    assert_eq!(arch("rrdb_x1.safetensors"), rrdb(1, 2, 4));
    assert_eq!(
        arch("srvgg_x4.safetensors"),
        Architecture::Compact(SrvggConfig {
            in_ch: 3,
            out_ch: 3,
            num_feat: 8,
            num_conv: 3,
            upscale: 4,
        })
    );
    let scale = |file: &str| {
        UpscalerModel::load(fixtures().join(file), &Device::Cpu, DType::F32)
            .unwrap()
            .scale()
    };
    assert_eq!(
        [
            scale("rrdb_x4.safetensors"),
            scale("rrdb_x2.safetensors"),
            scale("rrdb_x1.safetensors")
        ],
        [4, 2, 1]
    );
}

/// A 29x23 image of smooth gradients plus a pattern, so tile seams would show.
fn test_image(w: usize, h: usize) -> RgbImage {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            data.push((x * 255 / w) as u8);
            data.push((y * 255 / h) as u8);
            data.push(((x * 7 + y * 13) % 64 * 4) as u8);
        }
    }
    RgbImage::new(w, h, data).unwrap()
}

/// Tiles with overlap give the untiled output within a bound that shrinks as the overlap grows:
/// only pixels whose convolutions reached past a tile edge differ, and those near the edge are
/// discarded or weighted down. The tiny random models see far (RRDB x4: ~32 convolutions deep; x2
/// works at half resolution, so twice as far in pixels), so the bounds are per model. Measured
/// max |err| on the CPU, 61x47 image, tile 40 / overlap 16: RRDB x4 3.0e-4, x2 5.3e-2 (outputs up
/// to 3.4), compact 2.1e-3; tile 24 / overlap 8: 3.1e-2, 2.8e-1, 2.5e-2.
#[test]
fn tiled_matches_untiled() {
    let input = Planes::from_rgb(&test_image(61, 47)).unwrap();
    for (file, bound) in [
        ("rrdb_x4.safetensors", 1e-3),
        ("rrdb_x2.safetensors", 1e-1),
        ("srvgg_x4.safetensors", 5e-3),
    ] {
        let model = UpscalerModel::load(fixtures().join(file), &Device::Cpu, DType::F32).unwrap();
        let whole = model.upscale_planes(&input, TileOptions::WHOLE).unwrap();
        let err = |tile, overlap| {
            let tiles = TileOptions::new(tile, overlap).unwrap();
            let tiled = model.upscale_planes(&input, tiles).unwrap();
            let err = max_err(&tiled.data, &whole.data);
            eprintln!("{file} tile {tile} overlap {overlap}: max |err| {err:e}");
            err
        };
        let (wide, narrow) = (err(40, 16), err(24, 8));
        assert!(wide < bound, "{file}: {wide} over {bound}");
        assert!(
            wide < narrow / 4.0,
            "{file}: overlap 16 {wide}, overlap 8 {narrow}"
        );
    }
}

#[test]
fn upscale_sizes_follow_a1111() {
    let model = UpscalerModel::load(
        fixtures().join("srvgg_x4.safetensors"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let model = Upscaler::Model(model.into());
    let img = test_image(13, 10);
    let tiles = TileOptions::default();
    // Extras "scale by 2": sides rounded down to multiples of 8 (26x20 -> 24x16).
    let by = model.upscale_by(&img, 2.0, tiles).unwrap();
    assert_eq!((by.width, by.height), (24, 16));
    // A model pass is one model run: 52x40, the raw output with no resize.
    let native = model.upscale_to(&img, 52, 40, tiles).unwrap();
    let direct = match &model {
        Upscaler::Model(m) => m.upscale(&img, tiles).unwrap(),
        _ => unreachable!(),
    };
    assert_eq!(native, direct);
    // An exact size of another aspect.
    let to = model.upscale_to(&img, 30, 17, tiles).unwrap();
    assert_eq!((to.width, to.height), (30, 17));
    for name in Upscaler::BUILTIN {
        let up = Upscaler::builtin(name).unwrap();
        let out = up.upscale_by(&img, 3.0, tiles).unwrap();
        assert_eq!((out.width, out.height), (32, 24), "{name}");
        assert_eq!(up.upscale_to(&img, 26, 20, tiles).unwrap().width, 26);
    }
    // Nearest by 2 is pixel repetition.
    let n = Upscaler::Nearest.upscale_to(&img, 26, 20, tiles).unwrap();
    assert_eq!(n.data[..3], img.data[..3]);
    assert_eq!(n.data[3..6], img.data[..3]);
    assert!(Upscaler::Lanczos.upscale_by(&img, 0.5, tiles).is_err()); // 6x5 -> 0x0
}

fn temp_dir(test: &str) -> PathBuf {
    temp::dir(&format!("upscale-{test}"))
}

#[test]
fn pickles_are_refused_with_the_conversion_command() {
    let dir = temp_dir("pickles");
    for name in ["RealESRGAN_x4plus.pth", "model.pt", "model.ckpt"] {
        let path = dir.join(name);
        std::fs::write(&path, b"\x80\x02}q\x00.").unwrap();
        let err = UpscalerModel::load(&path, &Device::Cpu, DType::F32)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("python -c") && err.contains("params_ema"),
            "{err}"
        );
        assert!(err.contains(name), "{err}");
    }
    // A torch zip archive renamed to .safetensors is caught by its content.
    let path = dir.join("renamed.safetensors");
    std::fs::write(&path, b"PK\x03\x04rest of a zip").unwrap();
    let err = UpscalerModel::load(&path, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("safetensors.torch"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A copy of a fixture with `extra` added under each name.
fn with_extra(file: &str, dst: &Path, extra: &[(&str, Vec<usize>)]) {
    let bytes = std::fs::read(fixtures().join(file)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    for (name, shape) in extra {
        let n: usize = shape.iter().product();
        tensors.push((name.to_string(), Dtype::F32, shape.clone(), vec![0; 4 * n]));
    }
    let refs: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    write_safetensors(dst, &refs).unwrap();
}

#[test]
fn files_that_do_not_fit_are_refused_by_name() {
    let dir = temp_dir("fit");
    std::fs::create_dir_all(&dir).unwrap();
    // A tensor the architecture has no place for.
    let path = dir.join("extra.safetensors");
    with_extra(
        "rrdb_x4.safetensors",
        &path,
        &[("body.0.rdb1.conv6.weight", vec![4])],
    );
    let err = UpscalerModel::load(&path, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("body.0.rdb1.conv6.weight"), "{err}");
    // Something else entirely: the VAE fixture.
    let vae = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/tiny-sd1/vae/diffusion_pytorch_model.safetensors");
    let err = UpscalerModel::load(&vae, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not an upscaler"), "{err}");
    // A missing file names itself.
    let err = UpscalerModel::load(dir.join("nope.safetensors"), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nope.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
