//! An upscaler model from a `.safetensors` file: which architecture it is (told from its tensor
//! names), its sizes (from their shapes), and running it on an image in tiles.

use std::path::Path;
use std::sync::Arc;

use kiln_nn::weights::{FileSource, TensorSource, Weights};
use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use super::format::refuse_pickles;
use super::names::CanonicalNames;
use super::rrdb::{RrdbConfig, RrdbNet};
use super::srvgg::{SrvggConfig, SrvggNet};
use super::tiling::{run_tiled, Planes, TileOptions};
use crate::image::RgbImage;

/// Which network a file holds, with the sizes read from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// ESRGAN / Real-ESRGAN's RRDBNet (any of its key layouts).
    Rrdb(RrdbConfig),
    /// Real-ESRGAN's SRVGGNetCompact.
    Compact(SrvggConfig),
}

impl Architecture {
    /// Output pixels per input pixel along each side.
    pub fn scale(&self) -> usize {
        match self {
            Architecture::Rrdb(c) => c.scale(),
            Architecture::Compact(c) => c.upscale,
        }
    }

    /// The family's usual name: "ESRGAN" (RRDBNet) or "Real-ESRGAN compact" (SRVGGNetCompact).
    pub fn family(&self) -> &'static str {
        match self {
            Architecture::Rrdb(_) => "ESRGAN",
            Architecture::Compact(_) => "Real-ESRGAN compact",
        }
    }

    fn of(w: &Weights) -> Result<Architecture> {
        if w.contains("conv_first.weight") {
            Ok(Architecture::Rrdb(RrdbConfig::infer(w)?))
        } else if w.contains("body.0.weight") {
            Ok(Architecture::Compact(SrvggConfig::infer(w)?))
        } else {
            Err(Error::load(
                w.origin(),
                "not an upscaler kiln knows: expected ESRGAN / Real-ESRGAN RRDBNet tensors \
                 (conv_first.*, body.N.rdbK.*, or the old model.0.* / model.1.sub.* layout) or \
                 SRVGGNetCompact ones (body.N.weight)",
            ))
        }
    }
}

enum Net {
    // Boxed: RRDBNet's fixed layers are ten times the compact model's list.
    Rrdb(Box<RrdbNet>),
    Compact(SrvggNet),
}

pub struct UpscalerModel {
    net: Net,
    architecture: Architecture,
    device: Device,
    dtype: DType,
}

impl UpscalerModel {
    /// Opens a `.safetensors` upscaler (pickles are refused with a conversion command) and builds
    /// it on `device` in `dtype` (f32 where the device lacks it).
    pub fn load(path: impl AsRef<Path>, device: &Device, dtype: DType) -> Result<UpscalerModel> {
        let path = path.as_ref();
        refuse_pickles(path)?;
        let file = WeightFile::open(path)?;
        UpscalerModel::from_source(Box::new(FileSource::new(vec![file])), device, dtype)
    }

    /// The architecture and sizes of a `.safetensors` upscaler from its header alone (no tensor
    /// is read): for listing a folder of them.
    pub fn probe(path: impl AsRef<Path>) -> Result<Architecture> {
        let path = path.as_ref();
        refuse_pickles(path)?;
        let file = WeightFile::open(path)?;
        let names = CanonicalNames::new(Box::new(FileSource::new(vec![file])))?;
        Architecture::of(&Weights::from_source(
            Arc::new(names),
            &Device::Cpu,
            DType::F32,
        ))
    }

    /// From any tensor source holding one of the supported layouts (a file, random weights).
    pub fn from_source(
        source: Box<dyn TensorSource>,
        device: &Device,
        dtype: DType,
    ) -> Result<UpscalerModel> {
        let names = Arc::new(CanonicalNames::new(source)?);
        let dtype = device.float_dtype(dtype);
        let w = Weights::from_source(names.clone(), device, dtype);
        let model = UpscalerModel::with_architecture(&w, Architecture::of(&w)?)?;
        names.check_all_used()?;
        Ok(model)
    }

    /// Builds `architecture` from `w` as it is, with no names mapped or sizes inferred (random
    /// weights of a real model's shapes, for benchmarks).
    pub fn with_architecture(w: &Weights, architecture: Architecture) -> Result<UpscalerModel> {
        let net = match architecture {
            Architecture::Rrdb(c) => Net::Rrdb(Box::new(RrdbNet::new(w, c)?)),
            Architecture::Compact(c) => Net::Compact(SrvggNet::new(w, c)?),
        };
        Ok(UpscalerModel {
            net,
            architecture,
            device: w.device().clone(),
            dtype: w.dtype(),
        })
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// Output pixels per input pixel along each side.
    pub fn scale(&self) -> usize {
        self.architecture.scale()
    }

    /// Input sides must be multiples of this (the `pixel_unshuffle` factor of x2 / x1 RRDBNets);
    /// `upscale` pads to it.
    pub fn input_multiple(&self) -> usize {
        match self.architecture {
            Architecture::Rrdb(c) => c.unshuffle,
            Architecture::Compact(_) => 1,
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The network itself: [1, 3, H, W] in [0, 1] (H, W multiples of `input_multiple`), in the
    /// model's dtype, on its device -> [1, 3, H * scale, W * scale], not clamped.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.input_multiple();
        let ok = matches!(*x.shape(), [1, 3, h, w] if h % m == 0 && w % m == 0 && h > 0 && w > 0);
        if !ok {
            return Err(Error::shape(
                "upscaler",
                format!(
                    "input {:?}: expected [1, 3, H, W] with H and W multiples of {m}",
                    x.shape()
                ),
            ));
        }
        match &self.net {
            Net::Rrdb(n) => n.forward(x),
            Net::Compact(n) => n.forward(x),
        }
    }

    /// Float planes in, float planes out (not clamped), tile by tile: the path `upscale` takes,
    /// for callers that keep images in float.
    pub fn upscale_planes(&self, input: &Planes, tiles: TileOptions) -> Result<Planes> {
        if input.channels != 3 {
            return Err(Error::shape(
                "upscaler",
                format!("{} channels, expected 3 (RGB)", input.channels),
            ));
        }
        let scale = self.scale();
        run_tiled(input, tiles, self.input_multiple(), scale, |tile| {
            let shape = [1, 3, tile.height, tile.width];
            let x = Tensor::from_f32(&self.device, &shape, self.dtype, &tile.data)?;
            let y = self.forward(&x)?;
            Planes::new(3, tile.height * scale, tile.width * scale, y.to_vec_f32()?)
        })
    }

    /// `img` upscaled by `scale()`, in tiles of `tiles` (`TileOptions::default()` is A1111's).
    pub fn upscale(&self, img: &RgbImage, tiles: TileOptions) -> Result<RgbImage> {
        self.upscale_planes(&Planes::from_rgb(img)?, tiles)?
            .to_rgb()
    }
}
