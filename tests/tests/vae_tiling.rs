//! Tiled VAE decode and encode against the untiled model, on the bundled model's trained VAE
//! (block_out_channels [16, 32, 64], downsample factor 4, mid-block attention): a 128x128 image of
//! coloured shapes, its 32x32 latents, tiles of 16 latent pixels (3x3 tiles at 0, 8, 16).
//!
//! Bounds (measured values in the comments at each constant; the margins allow other backends'
//! rounding): tiling changes the result, since each tile's convolutions see zero padding at its
//! edges and the mid-block attention sees only the tile, so the comparison is a PSNR, not a
//! tolerance. A seam would show as a jump between the two pixel columns (rows) either side of a
//! tile edge; the mean absolute difference there is compared with the mean over all adjacent
//! column (row) pairs of the same image.

use std::path::{Path, PathBuf};

use kiln_kernels::testing::with_gpu;
use kiln_models::vae::{AutoencoderKL, VaeConfig, VaeTiling};
use kiln_nn::weights::Weights;
use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Tensor};

/// Tiled vs untiled decoded image (values in [-1, 1], peak-to-peak 2). Measured 22.9 dB on the CPU
/// and on llvmpipe (f32). This VAE was trained on 64-pixel images and its tiles are 64 pixels, so
/// a tile's mid-block attention and padding differ most from the whole image's; SD-sized tiles
/// (64 latent pixels) change far less of the receptive field.
const DECODE_MIN_PSNR_DB: f64 = 21.0;
/// Tiled vs untiled latent mean (PSNR over the untiled mean's range). Measured 31.1 dB.
const ENCODE_MIN_PSNR_DB: f64 = 29.0;
/// `seam_ratio`: the error's jump across a tile edge over its mean jump anywhere. Measured: decode
/// 0.84, encode 0.99; the same tiles butted together without blending: 11.1.
const MAX_SEAM_RATIO: f64 = 1.5;

const TILING: VaeTiling = VaeTiling {
    tile: 16,
    overlap: 4,
};
const SIZE: usize = 128;

fn vae_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/bundled/vae")
}

fn load(device: &Device, dtype: DType) -> AutoencoderKL {
    let dir = vae_dir();
    let cfg = VaeConfig::from_file(dir.join("config.json")).unwrap();
    let file = WeightFile::open(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    AutoencoderKL::new(&cfg, &Weights::new(vec![file], device, dtype)).unwrap()
}

/// A 128x128 picture like the bundled model's training set: a gradient sky with a red disc and a
/// green rectangle, [1, 3, H, W] in [-1, 1].
fn shapes_image(device: &Device) -> Tensor {
    let n = SIZE as f32;
    let mut chw = vec![0f32; 3 * SIZE * SIZE];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (fx, fy) = (x as f32 / n, y as f32 / n);
            let mut rgb = [0.1 + 0.3 * fy, 0.3 + 0.2 * fx, 0.9 - 0.4 * fy];
            if (fx - 0.35).powi(2) + (fy - 0.4).powi(2) < 0.06 {
                rgb = [0.9, 0.15, 0.1];
            }
            if (0.55..0.9).contains(&fx) && (0.6..0.85).contains(&fy) {
                rgb = [0.1, 0.8, 0.2];
            }
            for (c, v) in rgb.iter().enumerate() {
                chw[c * SIZE * SIZE + y * SIZE + x] = 2.0 * v - 1.0;
            }
        }
    }
    Tensor::from_f32(device, &[1, 3, SIZE, SIZE], DType::F32, &chw).unwrap()
}

fn psnr(got: &[f32], want: &[f32], peak_to_peak: f64) -> f64 {
    let mse = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - f64::from(w)).powi(2))
        .sum::<f64>()
        / got.len() as f64;
    10.0 * (peak_to_peak * peak_to_peak / mse).log10()
}

/// Mean |difference| between neighbouring pixel lines of `values` [C, h, w]: between line k-1
/// and line k for every k in `lines` (columns, or rows when `rows`).
fn line_diffs(values: &[f32], [c, h, w]: [usize; 3], rows: bool, lines: &[usize]) -> Vec<f64> {
    let at = |ch: usize, y: usize, x: usize| f64::from(values[(ch * h + y) * w + x]);
    let len = if rows { w } else { h };
    lines
        .iter()
        .map(|&k| {
            let mut sum = 0.0;
            for ch in 0..c {
                for i in 0..len {
                    sum += if rows {
                        (at(ch, k, i) - at(ch, k - 1, i)).abs()
                    } else {
                        (at(ch, i, k) - at(ch, i, k - 1)).abs()
                    };
                }
            }
            sum / (c * len) as f64
        })
        .collect()
}

/// The pixel lines (along one axis of `count` pixels, `scale` per latent pixel) where a tile starts
/// or ends inside the image.
fn tile_edges(tiling: &VaeTiling, count: usize, scale: usize) -> Vec<usize> {
    let latent = count / scale;
    let starts = tiling.starts(latent);
    assert!(starts.len() > 1, "the test must cut tiles");
    let extent = tiling.tile.min(latent);
    let mut edges: Vec<usize> = starts[1..].iter().map(|s| s * scale).collect();
    edges.extend(
        starts[..starts.len() - 1]
            .iter()
            .map(|s| (s + extent) * scale),
    );
    edges
}

/// The worst tile edge's mean |jump| of the error (tiled - untiled) across it, over the error's
/// mean |jump| across every line, along both axes. A seam is a step in the error; measuring the
/// error rather than the image keeps edges of the picture itself out of the measure.
fn seam_ratio(
    tiling: &VaeTiling,
    tiled: &[f32],
    untiled: &[f32],
    dims: [usize; 3],
    scale: usize,
) -> f64 {
    let err: Vec<f32> = tiled.iter().zip(untiled).map(|(a, b)| a - b).collect();
    let mut worst: f64 = 0.0;
    for rows in [false, true] {
        let count = if rows { dims[1] } else { dims[2] };
        let all: Vec<usize> = (1..count).collect();
        let overall = line_diffs(&err, dims, rows, &all).iter().sum::<f64>() / all.len() as f64;
        for e in line_diffs(&err, dims, rows, &tile_edges(tiling, count, scale)) {
            worst = worst.max(e / overall);
        }
    }
    worst
}

/// The untiled encoder's mean latents of the shapes image: a latent a real picture gives.
fn realistic_latents(vae: &AutoencoderKL) -> Tensor {
    vae.encode(&shapes_image(vae.device())).unwrap().mean
}

fn check_decode(device: &Device, dtype: DType) {
    let vae = load(device, dtype);
    let z = realistic_latents(&vae);
    assert_eq!(z.shape(), [1, 4, SIZE / 4, SIZE / 4]);
    let whole = vae.decode(&z).unwrap();
    let tiled = vae.decode_tiled(&z, &TILING).unwrap();
    assert_eq!(tiled.shape(), whole.shape());
    assert_eq!(tiled.dtype(), whole.dtype());
    let (t, u) = (tiled.to_vec_f32().unwrap(), whole.to_vec_f32().unwrap());
    let db = psnr(&t, &u, 2.0);
    let seam = seam_ratio(&TILING, &t, &u, [3, SIZE, SIZE], 4);
    // The same tiles butted together without blending: the measure must see their seams.
    let butted = VaeTiling::new(TILING.tile, 0).unwrap();
    let b = vae.decode_tiled(&z, &butted).unwrap().to_vec_f32().unwrap();
    let butted_seam = seam_ratio(&butted, &b, &u, [3, SIZE, SIZE], 4);
    eprintln!(
        "{} {dtype:?} decode: tiled vs untiled {db:.1} dB, seam ratio {seam:.2} (unblended tiles: \
         {butted_seam:.2})",
        device.name(),
    );
    assert!(db >= DECODE_MIN_PSNR_DB, "decode PSNR {db:.1} dB");
    assert!(seam <= MAX_SEAM_RATIO, "decode seam ratio {seam:.2}");
    assert!(
        butted_seam > MAX_SEAM_RATIO,
        "the seam measure misses unblended tiles"
    );
}

fn check_encode(device: &Device, dtype: DType) {
    let vae = load(device, dtype);
    let image = shapes_image(device);
    let whole = vae.encode(&image).unwrap();
    let tiled = vae.encode_tiled(&image, &TILING).unwrap();
    assert_eq!(tiled.mean.shape(), whole.mean.shape());
    let (t, u) = (
        tiled.mean.to_vec_f32().unwrap(),
        whole.mean.to_vec_f32().unwrap(),
    );
    let range =
        u.iter().fold(f32::MIN, |a, &b| a.max(b)) - u.iter().fold(f32::MAX, |a, &b| a.min(b));
    let db = psnr(&t, &u, f64::from(range));
    let seam = seam_ratio(&TILING, &t, &u, [4, SIZE / 4, SIZE / 4], 1);
    eprintln!(
        "{} {dtype:?} encode: tiled vs untiled mean {db:.1} dB, seam ratio {seam:.2}",
        device.name()
    );
    assert!(db >= ENCODE_MIN_PSNR_DB, "encode PSNR {db:.1} dB");
    assert!(seam <= MAX_SEAM_RATIO, "encode seam ratio {seam:.2}");
}

#[test]
fn tiled_decode_matches_untiled_on_cpu() {
    check_decode(&Device::Cpu, DType::F32);
}

#[test]
fn tiled_encode_matches_untiled_on_cpu() {
    check_encode(&Device::Cpu, DType::F32);
}

#[test]
fn tiled_decode_matches_untiled_on_gpu() {
    with_gpu(|gpu| {
        check_decode(gpu, DType::F32);
        if gpu.supports(DType::F16) {
            check_decode(gpu, DType::F16);
        }
    });
}

#[test]
fn tiled_encode_matches_untiled_on_gpu() {
    with_gpu(|gpu| check_encode(gpu, DType::F32));
}

/// One tile covering the latents is exactly the untiled model.
#[test]
fn a_single_tile_is_the_untiled_model() {
    let vae = load(&Device::Cpu, DType::F32);
    let z = realistic_latents(&vae);
    let big = VaeTiling::new(32, 8).unwrap();
    let a = vae.decode_tiled(&z, &big).unwrap().to_vec_f32().unwrap();
    let b = vae.decode(&z).unwrap().to_vec_f32().unwrap();
    assert_eq!(a, b);
}

#[test]
fn tiled_encode_rejects_sizes_off_the_factor() {
    let vae = load(&Device::Cpu, DType::F32);
    let image = Tensor::zeros(&Device::Cpu, &[1, 3, 66, 130], DType::F32).unwrap();
    let err = vae.encode_tiled(&image, &TILING).unwrap_err().to_string();
    assert!(err.contains("multiples") && err.contains("66"), "{err}");
}
