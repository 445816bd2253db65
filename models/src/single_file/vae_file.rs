//! A VAE in a file of its own, replacing a model's VAE (`--vae`, A1111's `--vae-path` / SD VAE
//! setting, stable-diffusion.cpp's `--vae`). Such files come in diffusers' layout
//! (`diffusion_pytorch_model.safetensors` renamed) or in the original layout, either bare
//! (`encoder.down.0.*`: how stabilityai/sdxl-vae and madebyollin/sdxl-vae-fp16-fix ship their single
//! files, and the SD 1.x `vae-ft-mse` ones) or with a checkpoint's `first_stage_model.` prefix.
//!
//! The file has no config: the sizes come from its shapes (`infer_vae`), and what shapes cannot
//! show (the latent scaling and shift, the GroupNorm group count, `force_upcast`) from the model's
//! own VAE config, as A1111 loads a VAE file's weights into the model's existing VAE module.

use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_nn::weights::{FileSource, Tally, TensorSource, Weights};
use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Error, QuantFormat, Result};

use super::infer_vae::{vae_config, VaeLayout};
use super::inventory::Inventory;
use super::renamed::{RenamedSource, UsedNames};
use super::stored::Stored;
use super::vae_names::{VaeNames, VAE_PREFIX};
use super::{check_all_used, refuse_pickles, ModelKind, NameMap};
use crate::vae::{AutoencoderKL, VaeConfig};

/// diffusers' own names: the view changes nothing but records what was used.
struct SameNames;

impl NameMap for SameNames {
    fn stored(&self, name: &str) -> Option<Stored> {
        Some(Stored::whole(name.to_string()))
    }
}

/// An opened VAE file, its layout told from its names.
pub struct VaeFile {
    source: Arc<dyn TensorSource>,
    inventory: Inventory,
    layout: VaeLayout,
}

impl VaeFile {
    /// Opens a `.safetensors` VAE (refusing pickles) and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<VaeFile> {
        let path = path.as_ref();
        refuse_pickles(path)?;
        let file = WeightFile::open(path)?;
        VaeFile::from_source(Arc::new(FileSource::new(vec![file])))
    }

    pub fn from_source(source: Arc<dyn TensorSource>) -> Result<VaeFile> {
        let inventory = Inventory::of(&*source);
        let layout = if inventory.any_under(VAE_PREFIX) {
            VaeLayout::Original(VAE_PREFIX)
        } else if inventory.any_under("encoder.down.") {
            VaeLayout::Original("")
        } else if inventory.any_under("encoder.down_blocks.") {
            VaeLayout::Diffusers
        } else {
            return Err(Error::load(
                &inventory.origin,
                format!(
                    "not an SD VAE: no `encoder.down.*` (original layout, bare or under \
                     `{VAE_PREFIX}`) or `encoder.down_blocks.*` (diffusers) tensors; found {}",
                    inventory.found()
                ),
            ));
        };
        Ok(VaeFile {
            source,
            inventory,
            layout,
        })
    }

    pub fn layout(&self) -> VaeLayout {
        self.layout
    }

    /// The config: sizes from the shapes, the rest from `model` (the VAE config of the model whose
    /// VAE this file replaces).
    pub fn config(&self, model: &VaeConfig) -> Result<VaeConfig> {
        let json = vae_config(&self.inventory, self.layout, ModelKind::Sd1)?;
        let mut config = VaeConfig::from_json(
            &serde_json::json!({
                "in_channels": json["in_channels"],
                "out_channels": json["out_channels"],
                "down_block_types": json["down_block_types"],
                "up_block_types": json["up_block_types"],
                "block_out_channels": json["block_out_channels"],
                "layers_per_block": json["layers_per_block"],
                "latent_channels": json["latent_channels"],
                "norm_num_groups": model.norm_num_groups,
                "use_quant_conv": json["use_quant_conv"],
                "use_post_quant_conv": json["use_post_quant_conv"],
                "mid_block_add_attention": json["mid_block_add_attention"],
            })
            .to_string(),
            &self.inventory.origin,
        )?;
        config.scaling_factor = model.scaling_factor;
        config.shift_factor = model.shift_factor;
        config.force_upcast = model.force_upcast;
        Ok(config)
    }

    /// The VAE built from `config`; every tensor of the file must be used but the training loss
    /// and EMA counters (A1111 skips the same).
    pub fn load(
        &self,
        config: &VaeConfig,
        device: &Device,
        dtype: DType,
        quantization: Option<QuantFormat>,
        tally: Option<Arc<Tally>>,
    ) -> Result<AutoencoderKL> {
        let prefix = self.layout.prefix();
        let names: Box<dyn NameMap> = match self.layout {
            VaeLayout::Original(p) => Box::new(VaeNames::with_prefix(config, p)),
            VaeLayout::Diffusers => Box::new(SameNames),
        };
        let used: UsedNames = Arc::new(Mutex::new(Default::default()));
        let source = RenamedSource::new(self.source.clone(), names, used.clone());
        let weights = Weights::from_source(Arc::new(source), device, dtype)
            .quantized(quantization)
            .tallied(tally);
        let vae = AutoencoderKL::new(config, &weights)?;
        let ignore = |name: &str| name.starts_with("loss.") || name.starts_with("model_ema.");
        check_all_used(&self.inventory, prefix, &used, ignore, "VAE file")?;
        Ok(vae)
    }
}

/// `--vae FILE` for a model whose own VAE config is `model`: opened, configured and loaded.
pub fn load_vae_file(
    path: &Path,
    model: &VaeConfig,
    device: &Device,
    dtype: DType,
) -> Result<AutoencoderKL> {
    let file = VaeFile::open(path)?;
    let config = file.config(model)?;
    file.load(&config, device, dtype, None, None)
}
