//! Loading a ControlNet from a diffusers folder, and checking that it fits the base model.

use std::path::Path;

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Error, QuantFormat, Result};

use super::{ControlNetConfig, ControlNetModel};
use crate::single_file::load_controlnet_file;
use crate::unet::{Resolved, UnetConfig};
use kiln_nn::weights::Weights;

/// Weight file names of a diffusers ControlNet folder, in order of preference.
const WEIGHT_FILES: [&str; 2] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
];

impl ControlNetModel {
    /// A diffusers folder ([`ControlNetModel::load`]) or an original single file
    /// (`control_v11p_sd15_canny.safetensors`, see `single_file::load_controlnet_file`), for a
    /// base model whose UNet config is `base`.
    pub fn open(
        path: &Path,
        base: &UnetConfig,
        device: &Device,
        dtype: DType,
        quantization: Option<QuantFormat>,
        streamed: bool,
    ) -> Result<ControlNetModel> {
        if !path.exists() {
            return Err(Error::load(path, "no such ControlNet file or folder"));
        }
        if path.is_dir() {
            ControlNetModel::load(path, device, dtype, quantization, streamed)
        } else {
            load_controlnet_file(path, base, device, dtype, quantization, streamed)
        }
    }

    /// Loads a diffusers ControlNet folder (config.json + diffusion_pytorch_model[.fp16].safetensors)
    /// onto `device` in `dtype`, packing its Linear / conv weights into `quantization` when given
    /// (`--weight-type`), streaming its blocks from host memory when `streamed`.
    pub fn load(
        path: &Path,
        device: &Device,
        dtype: DType,
        quantization: Option<QuantFormat>,
        streamed: bool,
    ) -> Result<ControlNetModel> {
        if !path.is_dir() {
            return Err(Error::load(
                path,
                "a ControlNet must be a diffusers folder with config.json and \
                 diffusion_pytorch_model.safetensors",
            ));
        }
        let config = ControlNetConfig::from_file(path.join("config.json"))?;
        let Some(file) = WEIGHT_FILES
            .iter()
            .map(|f| path.join(f))
            .find(|p| p.exists())
        else {
            return Err(Error::load(
                path,
                format!("no ControlNet weights: expected one of {WEIGHT_FILES:?}"),
            ));
        };
        let mut weights =
            Weights::new(vec![WeightFile::open(&file)?], device, dtype).quantized(quantization);
        if streamed {
            weights = weights.streamed();
        }
        ControlNetModel::new(&config, &weights).map_err(|e| Error::load(&file, e.to_string()))
    }
}

/// Refuses a ControlNet made for another base model (an SDXL ControlNet on SD 1.5, an SD 1.5 one
/// on SD 2.x): its cross-attention width and added conditioning must be the UNet's. `name` is how
/// the user named the ControlNet.
pub fn check_base(name: &str, controlnet: &ControlNetModel, unet: &Resolved) -> Result<()> {
    let describe = |dim: usize, added: bool| {
        let base = match (dim, added) {
            (768, false) => " (SD 1.x)",
            (1024, false) => " (SD 2.x)",
            (2048, true) => " (SDXL)",
            _ => "",
        };
        format!(
            "cross_attention_dim {dim}, {}{base}",
            if added {
                "SDXL added conditioning"
            } else {
                "no added conditioning"
            }
        )
    };
    let c = (
        controlnet.cross_attention_dim(),
        controlnet.added_conditioning(),
    );
    let u = (unet.levels[0].cross_attention_dim, unet.added);
    if c != u {
        return Err(Error::shape(
            "controlnet",
            format!(
                "ControlNet {name} was made for another base model: it has {}, the model's UNet has {}",
                describe(c.0, c.1.is_some()),
                describe(u.0, u.1.is_some())
            ),
        ));
    }
    let (cl, ul) = (controlnet.resolved().levels.len(), unet.levels.len());
    let cw: Vec<_> = controlnet
        .resolved()
        .levels
        .iter()
        .map(|l| (l.channels, l.layers))
        .collect();
    let uw: Vec<_> = unet.levels.iter().map(|l| (l.channels, l.layers)).collect();
    if cw != uw {
        return Err(Error::shape(
            "controlnet",
            format!(
                "ControlNet {name}'s down path ({cl} levels, (channels, layers) {cw:?}) differs from \
                 the model's UNet ({ul} levels, {uw:?})"
            ),
        ));
    }
    Ok(())
}
