//! Loading a ControlNet from a diffusers folder, and checking that it fits the base model.

use std::path::Path;
use std::sync::Arc;

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Error, QuantFormat, Result};

use super::{ControlNetConfig, ControlNetModel};
use crate::single_file::load_controlnet_file;
use crate::unet::{Resolved, UnetConfig};
use kiln_nn::weights::{FileSource, Tally, TensorSource, Weights, ZeroSource};

/// How a ControlNet loads: as its base model's UNet did (see `pipeline::open_controlnet`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlNetLoad {
    /// The compute dtype (f32 where the device lacks it).
    pub dtype: DType,
    /// Packs Linear / convolution weights into this format as they load (`--weight-type`).
    pub quantization: Option<QuantFormat>,
    /// Keeps the down / mid blocks in host memory, uploading each just before it runs.
    pub streamed: bool,
    /// The file's names and shapes with zeros for data, each weight's bytes tallied (see
    /// [`ControlNetModel::planned_weights`]): the ControlNet of `--plan`'s zero-weight model.
    pub zero_weights: bool,
}

impl ControlNetLoad {
    /// Weights as stored, in `dtype`, resident.
    pub fn dtype(dtype: DType) -> ControlNetLoad {
        ControlNetLoad {
            dtype,
            quantization: None,
            streamed: false,
            zero_weights: false,
        }
    }

    /// The file's tensors as this load reads them (zeros for the plan).
    pub(crate) fn source(&self, file: WeightFile) -> Arc<dyn TensorSource> {
        let source: Arc<dyn TensorSource> = Arc::new(FileSource::new(vec![file]));
        if self.zero_weights {
            Arc::new(ZeroSource::new(source))
        } else {
            source
        }
    }

    /// The weights view over `source` as this load wants it, and the tally it records into (a zero
    /// load's).
    pub(crate) fn weights(
        &self,
        source: Arc<dyn TensorSource>,
        device: &Device,
    ) -> (Weights, Option<Arc<Tally>>) {
        let tally = self.zero_weights.then(|| Arc::new(Tally::default()));
        let mut weights = Weights::from_source(source, device, self.dtype)
            .quantized(self.quantization)
            .tallied(tally.clone());
        if self.streamed {
            weights = weights.streamed();
        }
        (weights, tally)
    }
}

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
        load: &ControlNetLoad,
    ) -> Result<ControlNetModel> {
        if !path.exists() {
            return Err(Error::load(path, "no such ControlNet file or folder"));
        }
        if path.is_dir() {
            ControlNetModel::load(path, device, load)
        } else {
            load_controlnet_file(path, base, device, load)
        }
    }

    /// Loads a diffusers ControlNet folder (config.json + diffusion_pytorch_model[.fp16].safetensors)
    /// onto `device` as `load` says (dtype, packing, streaming, zeros for the plan).
    pub fn load(path: &Path, device: &Device, load: &ControlNetLoad) -> Result<ControlNetModel> {
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
        let (weights, tally) = load.weights(load.source(WeightFile::open(&file)?), device);
        let model = ControlNetModel::new(&config, &weights)
            .map_err(|e| Error::load(&file, e.to_string()))?;
        Ok(model.with_tally(tally))
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
