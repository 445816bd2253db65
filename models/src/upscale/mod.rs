//! Image upscalers as A1111 offers them: ESRGAN / Real-ESRGAN networks from `.safetensors` files
//! (`UpscalerModel`: BasicSR's RRDBNet in its three key layouts, Real-ESRGAN's SRVGGNetCompact),
//! run in blended tiles so memory is bounded by the tile, and the plain resizers "None",
//! "Lanczos" and "Nearest". `Upscaler` puts them behind one type with A1111's two entry points:
//! `upscale_by` (the Extras tab and API) and `upscale_to` (an exact size, as hires fix resizes).

pub mod extras;
mod format;
mod hires;
mod model;
mod names;
mod ops;
mod resample;
mod rrdb;
mod srvgg;
mod tiling;

use std::sync::Arc;

pub use format::refuse_pickles;
pub use hires::FileUpscaler;
pub use model::{Architecture, UpscalerModel};
pub use ops::{pixel_shuffle, pixel_unshuffle, prelu};
pub use resample::resize_nearest;
pub use rrdb::RrdbConfig;
pub use srvgg::SrvggConfig;
pub use tiling::{Planes, TileOptions};

use kiln_runtime::{Error, Result};

use crate::image::{resize, RgbImage};

/// How many times A1111 runs a model at most to reach a size (a x2 model reaches x8).
const MAX_PASSES: usize = 3;

/// One of A1111's upscalers.
#[derive(Clone)]
pub enum Upscaler {
    /// No upscaling pass: only the final Lanczos resize to the target size.
    None,
    /// PIL's LANCZOS resize (kiln's Lanczos-3: the two differ slightly).
    Lanczos,
    /// PIL's NEAREST resize.
    Nearest,
    Model(Arc<UpscalerModel>),
}

impl std::fmt::Debug for Upscaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upscaler::Model(m) => write!(f, "Model({:?})", m.architecture()),
            other => f.write_str(other.builtin_name().unwrap_or("?")),
        }
    }
}

impl Upscaler {
    /// The built-in upscalers, by A1111's names.
    pub const BUILTIN: [&'static str; 3] = ["None", "Lanczos", "Nearest"];

    /// "None", "Lanczos" or "Nearest" (any case); `None` for any other name.
    pub fn builtin(name: &str) -> Option<Upscaler> {
        match name.to_ascii_lowercase().as_str() {
            "none" => Some(Upscaler::None),
            "lanczos" => Some(Upscaler::Lanczos),
            "nearest" => Some(Upscaler::Nearest),
            _ => None,
        }
    }

    pub fn builtin_name(&self) -> Option<&'static str> {
        match self {
            Upscaler::None => Some("None"),
            Upscaler::Lanczos => Some("Lanczos"),
            Upscaler::Nearest => Some("Nearest"),
            Upscaler::Model(_) => None,
        }
    }

    /// The model's own factor; `None` for the resizers, which take any.
    pub fn native_scale(&self) -> Option<usize> {
        match self {
            Upscaler::Model(m) => Some(m.scale()),
            _ => None,
        }
    }

    /// One pass of A1111's `do_upscale`: a model by its own factor, a resizer by `scale`.
    fn pass(&self, img: &RgbImage, scale: f64, tiles: TileOptions) -> Result<RgbImage> {
        let by = |n: usize| ((n as f64 * scale) as usize).max(1);
        match self {
            Upscaler::None => Ok(img.clone()),
            Upscaler::Lanczos => lanczos(img, by(img.width), by(img.height)),
            Upscaler::Nearest => resize_nearest(img, by(img.width), by(img.height)),
            Upscaler::Model(m) => m.upscale(img, tiles),
        }
    }

    /// A1111's `Upscaler.upscale(img, scale)`: the target is `floor(side * scale / 8) * 8`; a model
    /// runs (up to 3 times) until the image reaches it, and a Lanczos resize gives the exact size.
    pub fn upscale_by(&self, img: &RgbImage, scale: f64, tiles: TileOptions) -> Result<RgbImage> {
        let dest = |n: usize| (n as f64 * scale / 8.0).floor() as usize * 8;
        let (dw, dh) = (dest(img.width), dest(img.height));
        if !scale.is_finite() || scale <= 0.0 || dw == 0 || dh == 0 {
            return Err(Error::shape(
                "upscale",
                format!(
                    "scale {scale} of a {}x{} image gives a {dw}x{dh} target (sides are rounded \
                     down to multiples of 8, as A1111 does)",
                    img.width, img.height
                ),
            ));
        }
        let mut img = img.clone();
        for i in 0..MAX_PASSES {
            if img.width >= dw && img.height >= dh && (i > 0 || scale != 1.0) {
                break;
            }
            let before = (img.width, img.height);
            img = self.pass(&img, scale, tiles)?;
            if before == (img.width, img.height) {
                break;
            }
        }
        lanczos(&img, dw, dh)
    }

    /// `img` at exactly `width` x `height` (hires fix, `kiln upscale --scale`): a model runs (up
    /// to 3 times) until the image covers the target, then one Lanczos resize gives the exact size
    /// (and aspect); the resizers go straight to it ("None" is Lanczos, as A1111's resize is).
    /// A1111's hires fix differs only in resizing through its multiple-of-8 size on the way.
    pub fn upscale_to(
        &self,
        img: &RgbImage,
        width: usize,
        height: usize,
        tiles: TileOptions,
    ) -> Result<RgbImage> {
        if width == 0 || height == 0 {
            return Err(Error::shape(
                "upscale",
                format!("target size {width}x{height}"),
            ));
        }
        match self {
            Upscaler::None | Upscaler::Lanczos => lanczos(img, width, height),
            Upscaler::Nearest => resize_nearest(img, width, height),
            Upscaler::Model(m) => {
                let mut img = img.clone();
                // A x1 model (a restorer) runs once; others until the target is covered.
                for i in 0..MAX_PASSES {
                    let covered = img.width >= width && img.height >= height;
                    if (covered && (i > 0 || m.scale() != 1)) || (i > 0 && m.scale() == 1) {
                        break;
                    }
                    img = m.upscale(&img, tiles)?;
                }
                lanczos(&img, width, height)
            }
        }
    }
}

fn lanczos(img: &RgbImage, width: usize, height: usize) -> Result<RgbImage> {
    resize(img, width, height).map_err(|e| Error::shape("upscale", e.to_string()))
}
