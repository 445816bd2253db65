//! Single-file checkpoints in the original Stable Diffusion (CompVis / Stability) layout: one
//! `.safetensors` with the UNet under `model.diffusion_model.`, the VAE under `first_stage_model.`
//! and the text encoder under `cond_stage_model.` (SD 1.x: transformers' CLIP; SD 2.x: OpenCLIP).
//!
//! Nothing is converted up front. Each component gets a `Weights` view that answers the diffusers /
//! transformers names the model builders ask for by looking up the stored tensor (the inverse of
//! diffusers' single-file conversion, in `unet_names`, `vae_names`, `clip_names`) and loading it, or the
//! part of it that is the diffusers tensor: a 1x1 conv weight as a Linear one, a third of OpenCLIP's
//! fused q/k/v projection. Configs are inferred from the names and shapes (`infer_*`), with what the
//! weights cannot show taken per model kind as diffusers does (`kind`). After a component is built,
//! any tensor of it that the model did not use is an error, so a checkpoint that does not match the
//! inferred architecture fails at load instead of running as something else. Tensors SD inference
//! never uses are excused: the VAE's training loss, CLIP's position_ids buffer, OpenCLIP's layers past
//! the one SD 2.x conditions on and its projection; tensors outside the three prefixes (the DDPM
//! schedule, EMA buffers) are never looked at.
//!
//! Pickled checkpoints (`.ckpt`) are refused with instructions to convert them.

mod clip_names;
mod format;
mod infer_clip;
mod infer_unet;
mod infer_vae;
mod inventory;
mod kind;
mod renamed;
mod stored;
mod unet_names;
mod vae_names;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Error, QuantFormat, Result};
use serde_json::Value;

use crate::clip::{ClipTextConfig, ClipTextModel};
use crate::tally::ModelTally;
use crate::unet::{Unet, UnetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use clip_names::{ClipNames, OpenClipNames, CLIP_LEGACY_PREFIX, CLIP_PREFIX, OPEN_CLIP_PREFIX};
use inventory::Inventory;
use kiln_nn::weights::{FileSource, TensorSource, Weights};
use renamed::{RenamedSource, UsedNames};
use unet_names::{UnetNames, UNET_PREFIX};
use vae_names::{VaeNames, VAE_PREFIX};

pub use format::refuse_pickles;
pub use infer_clip::TextEncoderKind;
pub use kind::ModelKind;
use stored::Stored;

/// Maps a diffusers / transformers tensor name to where an original-layout checkpoint stores it;
/// `None` when the layout has no such tensor.
pub(crate) trait NameMap: Send + Sync {
    fn stored(&self, name: &str) -> Option<Stored>;
}

/// The three components of a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
}

impl Component {
    fn label(self) -> &'static str {
        match self {
            Component::Unet => "UNet",
            Component::Vae => "VAE",
            Component::TextEncoder => "text encoder",
        }
    }
}

/// An original-layout checkpoint, opened; components load on request.
pub struct SingleFile {
    source: Arc<dyn TensorSource>,
    inventory: Inventory,
    kind: ModelKind,
    text: Option<TextEncoderKind>,
    /// Packs layer weights into this format as components load (`--weight-type`).
    quantization: Option<QuantFormat>,
    /// Streams the UNet's blocks (`--max-vram`).
    stream_unet: bool,
    /// Records the weight bytes of each component (`--plan`).
    tally: Option<Arc<ModelTally>>,
}

impl SingleFile {
    /// Opens a `.safetensors` single-file checkpoint (refusing pickles) and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<SingleFile> {
        let path = path.as_ref();
        refuse_pickles(path)?;
        let file = WeightFile::open(path)?;
        SingleFile::from_source(Arc::new(FileSource::new(vec![file])))
    }

    /// The same over any source of original-layout names (a shape-only manifest in the tests).
    pub fn from_source(source: Arc<dyn TensorSource>) -> Result<SingleFile> {
        let shapes: BTreeMap<String, Vec<usize>> = source
            .names()
            .into_iter()
            .filter_map(|n| source.shape_of(&n).map(|s| (n, s)))
            .collect();
        let inventory = Inventory {
            origin: source.origin(),
            shapes,
        };
        let has = |p: &str| inventory.any_under(p);
        if !has(UNET_PREFIX) && !has(VAE_PREFIX) && !has("cond_stage_model.") {
            let hint = if inventory.has("conv_in.weight") || inventory.has("encoder.conv_in.weight")
            {
                " It looks like one component of a diffusers folder: load the folder instead."
            } else {
                ""
            };
            return Err(Error::load(
                &inventory.origin,
                format!(
                    "not a Stable Diffusion checkpoint in the original layout: no tensors under \
                     `{UNET_PREFIX}`, `{VAE_PREFIX}` or `cond_stage_model.`.{hint}"
                ),
            ));
        }
        let text = if has(CLIP_PREFIX) {
            Some(TextEncoderKind::Clip(CLIP_PREFIX))
        } else if has(OPEN_CLIP_PREFIX) {
            Some(TextEncoderKind::OpenClip)
        } else if inventory.has(&format!(
            "{CLIP_LEGACY_PREFIX}embeddings.token_embedding.weight"
        )) {
            Some(TextEncoderKind::Clip(CLIP_LEGACY_PREFIX))
        } else {
            None
        };
        Ok(SingleFile {
            kind: ModelKind::detect(&inventory),
            source,
            inventory,
            text,
            quantization: None,
            stream_unet: false,
            tally: None,
        })
    }

    /// The UNet loads with streamed blocks (see `Weights::streamed`); every component records its
    /// weights' device bytes in `tally` when given.
    pub fn streamed_unet(self, stream: bool, tally: Option<Arc<ModelTally>>) -> SingleFile {
        SingleFile {
            stream_unet: stream,
            tally,
            ..self
        }
    }

    /// Components load with their Linear / 1x1-conv weights packed into `format`.
    pub fn quantized(self, format: Option<QuantFormat>) -> SingleFile {
        SingleFile {
            quantization: format,
            ..self
        }
    }

    pub fn path(&self) -> &Path {
        &self.inventory.origin
    }

    /// SD 1.x or 2.x, plain or inpainting, as diffusers classifies the file.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    pub fn text_encoder_kind(&self) -> Option<TextEncoderKind> {
        self.text
    }

    pub fn has(&self, component: Component) -> bool {
        match component {
            Component::Unet => self.inventory.any_under(UNET_PREFIX),
            Component::Vae => self.inventory.any_under(VAE_PREFIX),
            Component::TextEncoder => self.text.is_some(),
        }
    }

    /// The UNet's diffusers config.json, inferred from the weights.
    pub fn unet_config_json(&self) -> Result<Value> {
        self.require(Component::Unet)?;
        infer_unet::unet_config(&self.inventory, self.kind)
    }

    pub fn unet_config(&self) -> Result<UnetConfig> {
        UnetConfig::from_json(&self.unet_config_json()?.to_string())
            .map_err(|e| Error::load(self.path(), format!("inferred UNet config: {e}")))
    }

    /// The VAE's diffusers config.json, inferred from the weights.
    pub fn vae_config_json(&self) -> Result<Value> {
        self.require(Component::Vae)?;
        infer_vae::vae_config(&self.inventory, self.kind)
    }

    pub fn vae_config(&self) -> Result<VaeConfig> {
        VaeConfig::from_json(&self.vae_config_json()?.to_string(), self.path())
    }

    /// The text encoder's transformers config.json, inferred from the weights.
    pub fn text_encoder_config_json(&self) -> Result<Value> {
        infer_clip::text_encoder_config(&self.inventory, self.text_kind()?)
    }

    pub fn text_encoder_config(&self) -> Result<ClipTextConfig> {
        ClipTextConfig::from_json(&self.text_encoder_config_json()?.to_string(), self.path())
    }

    /// The UNet built from `config` (the inferred one when `None`); every UNet tensor must be used.
    pub fn load_unet(
        &self,
        config: Option<&UnetConfig>,
        device: &Device,
        dtype: DType,
    ) -> Result<Unet> {
        let config = match config {
            Some(c) => c.clone(),
            None => self.unet_config()?,
        };
        let names = UnetNames::new(&config)?;
        self.build(
            Component::Unet,
            Box::new(names),
            device,
            dtype,
            |_| false,
            |w| Unet::new(&config, w),
        )
    }

    /// The VAE built from `config` (the inferred one when `None`); every VAE tensor must be used.
    pub fn load_vae(
        &self,
        config: Option<&VaeConfig>,
        device: &Device,
        dtype: DType,
    ) -> Result<AutoencoderKL> {
        let config = match config {
            Some(c) => c.clone(),
            None => self.vae_config()?,
        };
        let names = VaeNames::new(&config);
        // Un-pruned checkpoints keep the training loss (LPIPS, discriminator) under `loss.`.
        let ignore = |name: &str| name.starts_with("loss.");
        self.build(
            Component::Vae,
            Box::new(names),
            device,
            dtype,
            ignore,
            |w| AutoencoderKL::new(&config, w),
        )
    }

    /// The text encoder built from `config` (the inferred one when `None`); every text-encoder tensor
    /// must be used except those SD never runs (OpenCLIP's layers from `num_hidden_layers` on, its
    /// text_projection and logit_scale; CLIP's position_ids buffer).
    pub fn load_text_encoder(
        &self,
        config: Option<&ClipTextConfig>,
        device: &Device,
        dtype: DType,
    ) -> Result<ClipTextModel> {
        let config = match config {
            Some(c) => c.clone(),
            None => self.text_encoder_config()?,
        };
        let kind = self.text_kind()?;
        let names: Box<dyn NameMap> = match kind {
            TextEncoderKind::Clip(prefix) => Box::new(ClipNames { prefix }),
            TextEncoderKind::OpenClip => Box::new(OpenClipNames),
        };
        let layers = config.num_hidden_layers;
        let ignore = move |name: &str| match kind {
            TextEncoderKind::Clip(_) => name == "embeddings.position_ids",
            TextEncoderKind::OpenClip => {
                let past_last = name
                    .strip_prefix("transformer.resblocks.")
                    .and_then(stored::split_index)
                    .is_some_and(|(i, _)| i >= layers);
                past_last || matches!(name, "text_projection" | "logit_scale" | "attn_mask")
            }
        };
        self.build(Component::TextEncoder, names, device, dtype, ignore, |w| {
            ClipTextModel::new(&config, w)
        })
    }

    /// A diffusers-named view of one component, and the set it records the stored names it loads in.
    fn weights(
        &self,
        names: Box<dyn NameMap>,
        device: &Device,
        dtype: DType,
    ) -> (Weights, UsedNames) {
        let used: UsedNames = Arc::new(Mutex::new(BTreeSet::new()));
        let source = RenamedSource::new(self.source.clone(), names, used.clone());
        (
            Weights::from_source(Arc::new(source), device, dtype).quantized(self.quantization),
            used,
        )
    }

    /// Builds `component` from a view through `names`, then fails on any stored tensor of it that
    /// the model did not load and `ignore` (given the name after the component's prefix) does not
    /// excuse.
    fn build<T>(
        &self,
        component: Component,
        names: Box<dyn NameMap>,
        device: &Device,
        dtype: DType,
        ignore: impl Fn(&str) -> bool,
        build: impl FnOnce(&Weights) -> Result<T>,
    ) -> Result<T> {
        self.require(component)?;
        let (weights, used) = self.weights(names, device, dtype);
        let tally = self.tally.as_ref().map(|t| match component {
            Component::Unet => t.unet.clone(),
            Component::Vae => t.vae.clone(),
            Component::TextEncoder => t.text_encoder.clone(),
        });
        let mut weights = weights.tallied(tally);
        if component == Component::Unet && self.stream_unet {
            weights = weights.streamed();
        }
        let model = build(&weights)?;
        let used = used.lock().map(|u| u.clone()).unwrap_or_default();
        let prefix = self.prefix(component);
        let unused: Vec<&String> = self
            .inventory
            .under(prefix)
            .filter(|n| !used.contains(*n) && !ignore(&n[prefix.len()..]))
            .collect();
        if !unused.is_empty() {
            let shown: Vec<String> = unused
                .iter()
                .take(8)
                .map(|n| format!("`{n}` {:?}", self.inventory.get(n).unwrap_or_default()))
                .collect();
            return Err(Error::load(
                self.path(),
                format!(
                    "{} tensor(s) of the {} were not used by the model built from the config, so the \
                     checkpoint does not have that architecture: {}{}",
                    unused.len(),
                    component.label(),
                    shown.join(", "),
                    if unused.len() > shown.len() { ", ..." } else { "" }
                ),
            ));
        }
        Ok(model)
    }

    /// An error naming the component when the file lacks it.
    fn require(&self, component: Component) -> Result<()> {
        if self.has(component) {
            return Ok(());
        }
        Err(Error::load(
            self.path(),
            format!(
                "this single file has no {} (no tensors under `{}`)",
                component.label(),
                self.prefix(component)
            ),
        ))
    }

    fn prefix(&self, component: Component) -> &'static str {
        match component {
            Component::Unet => UNET_PREFIX,
            Component::Vae => VAE_PREFIX,
            Component::TextEncoder => match self.text {
                Some(TextEncoderKind::Clip(prefix)) => prefix,
                Some(TextEncoderKind::OpenClip) => OPEN_CLIP_PREFIX,
                None => "cond_stage_model.",
            },
        }
    }

    fn text_kind(&self) -> Result<TextEncoderKind> {
        self.text.ok_or_else(|| {
            Error::load(
                self.path(),
                format!(
                    "this single file has no text encoder (no `{CLIP_PREFIX}*` or `{OPEN_CLIP_PREFIX}*` tensors)"
                ),
            )
        })
    }
}
