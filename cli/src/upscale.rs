//! `kiln upscale`: one image through an ESRGAN / Real-ESRGAN model (.safetensors) or a plain
//! resizer, written as a PNG only once it is complete.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_models::image::png::encode_png;
use kiln_models::image::read_image;
use kiln_models::upscale::{TileOptions, Upscaler, UpscalerModel};
use kiln_runtime::{DType, Device};

use crate::generate::write_all_or_nothing;

#[derive(Args, Debug)]
pub struct UpscaleArgs {
    /// Input image (PNG, JPEG, WebP, ...).
    #[arg(short = 'i', long)]
    input: PathBuf,

    /// Output PNG; written only when the upscale succeeds.
    #[arg(short = 'o', long)]
    output: PathBuf,

    /// An ESRGAN / Real-ESRGAN .safetensors file (RRDBNet or SRVGGNetCompact), or `lanczos` /
    /// `nearest` for a plain resize.
    #[arg(long)]
    model: String,

    /// Output size as a multiple of the input (any factor: a model runs until the image is at
    /// least that large, then a Lanczos resize gives the exact size). Default: the model's own
    /// factor; required for lanczos / nearest.
    #[arg(long)]
    scale: Option<f64>,

    /// Tile side in input pixels (0: the whole image at once); memory is bounded by the tile.
    #[arg(long, default_value_t = 192)]
    tile: usize,

    /// Pixels neighbouring tiles share, blended across (default 8, or less than half a smaller
    /// tile).
    #[arg(long)]
    tile_overlap: Option<usize>,

    /// Model precision: f16 or f32 (default: f16 on a GPU that has it, f32 on the CPU).
    #[arg(long)]
    dtype: Option<String>,
}

pub fn run(args: &UpscaleArgs, device: &Device) -> Result<()> {
    let overlap = args.tile_overlap.unwrap_or(
        TileOptions::default()
            .overlap
            .min(args.tile.saturating_sub(1) / 2),
    );
    let tiles = TileOptions::new(args.tile, overlap)?;
    let dtype = match args.dtype.as_deref() {
        None if matches!(device, Device::Cpu) => DType::F32,
        None | Some("f16") => DType::F16,
        Some("f32") => DType::F32,
        Some(other) => bail!("--dtype {other}: expected f16 or f32"),
    };
    let upscaler = match Upscaler::builtin(&args.model) {
        Some(Upscaler::None) => bail!("--model none: use lanczos or nearest for a plain resize"),
        Some(builtin) => builtin,
        None => {
            let model = UpscalerModel::load(&args.model, device, dtype)
                .with_context(|| format!("loading upscaler {}", args.model))?;
            Upscaler::Model(model.into())
        }
    };
    let scale = match (args.scale, upscaler.native_scale()) {
        (Some(s), _) if !(s.is_finite() && s > 0.0) => bail!("--scale {s}: must be above 0"),
        (Some(s), _) => s,
        (None, Some(native)) => native as f64,
        (None, None) => bail!("--model {}: give --scale for a plain resize", args.model),
    };
    let img = read_image(&args.input)?;
    let size = |n: usize| (n as f64 * scale).round() as usize;
    let (w, h) = (size(img.width), size(img.height));
    if w == 0 || h == 0 {
        bail!(
            "--scale {scale} of a {}x{} image leaves nothing",
            img.width,
            img.height
        );
    }
    let start = Instant::now();
    let out = upscaler.upscale_to(&img, w, h, tiles)?;
    let png = encode_png(&out, &[])?;
    write_all_or_nothing(&[(args.output.clone(), png)])?;
    eprintln!(
        "{}: {}x{} -> {}x{} in {:.2} s on {}",
        args.output.display(),
        img.width,
        img.height,
        out.width,
        out.height,
        start.elapsed().as_secs_f64(),
        device.name()
    );
    Ok(())
}
