//! Single-file checkpoints in the original Stable Diffusion (CompVis / Stability) layout: one
//! `.safetensors` with the UNet under `model.diffusion_model.`, the VAE under `first_stage_model.`
//! and the text encoder under `cond_stage_model.` (SD 1.x: transformers' CLIP; SD 2.x: OpenCLIP), or
//! SDXL's two under `conditioner.embedders.` (base: CLIP-L, then OpenCLIP bigG with its projection;
//! the refiner: bigG alone, as its second text encoder, diffusers' `text_encoder_2`).
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
//! the one SD 2.x conditions on and its projection, its logit_scale; tensors outside the component
//! prefixes (the DDPM schedule, EMA buffers) are never looked at.
//!
//! Pickled checkpoints (`.ckpt`) are refused with instructions to convert them.

mod clip_names;
mod controlnet_file;
mod format;
mod infer_clip;
mod infer_unet;
mod infer_vae;
mod inventory;
mod kind;
mod renamed;
mod stored;
mod unet_names;
mod vae_file;
mod vae_names;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Error, QuantFormat, Result};
use serde_json::Value;

use crate::clip::{ClipTextConfig, ClipTextModel};
use crate::tally::ModelTally;
use crate::unet::{Unet, UnetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use clip_names::{
    ClipNames, OpenClipNames, CLIP_LEGACY_PREFIX, CLIP_PREFIX, OPEN_CLIP_PREFIX,
    REFINER_BIG_G_PREFIX, SDXL_BIG_G_PREFIX, SDXL_CLIP_PREFIX,
};
pub use infer_vae::VaeLayout;
use inventory::Inventory;
use kiln_nn::weights::{FileSource, TensorSource, Weights};
use renamed::{RenamedSource, UsedNames};
use unet_names::UNET_PREFIX;
pub(crate) use unet_names::{compvis_module, UnetNames};
use vae_names::{VaeNames, VAE_PREFIX};

pub use controlnet_file::load_controlnet_file;
pub use format::refuse_pickles;
pub use infer_clip::TextEncoderKind;
pub use kind::ModelKind;
use stored::Stored;
pub use vae_file::{load_vae_file, VaeFile};

/// Maps a diffusers / transformers tensor name to where an original-layout checkpoint stores it;
/// `None` when the layout has no such tensor.
pub(crate) trait NameMap: Send + Sync {
    fn stored(&self, name: &str) -> Option<Stored>;
}

/// The components of a checkpoint, named as diffusers names a pipeline's parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Unet,
    Vae,
    /// SD's only text encoder; SDXL base's CLIP-L.
    TextEncoder,
    /// SDXL's OpenCLIP bigG (the refiner's only one).
    TextEncoder2,
}

impl Component {
    fn label(self) -> &'static str {
        match self {
            Component::Unet => "UNet",
            Component::Vae => "VAE",
            Component::TextEncoder => "text encoder",
            Component::TextEncoder2 => "second text encoder",
        }
    }
}

/// The top-level prefixes the loader knows, for the message when a file has none of them.
const KNOWN_PREFIXES: [&str; 4] = [
    UNET_PREFIX,
    VAE_PREFIX,
    "cond_stage_model.",
    "conditioner.embedders.",
];

/// An original-layout checkpoint, opened; components load on request.
pub struct SingleFile {
    source: Arc<dyn TensorSource>,
    inventory: Inventory,
    kind: ModelKind,
    text: Option<TextEncoderKind>,
    /// SDXL's bigG.
    text_2: Option<TextEncoderKind>,
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
        let inventory = Inventory::of(&*source);
        let has = |p: &str| inventory.any_under(p);
        if !KNOWN_PREFIXES.iter().any(|p| has(p)) {
            let hint = if inventory.has("conv_in.weight") || inventory.has("encoder.conv_in.weight")
            {
                " It looks like one component of a diffusers folder or a VAE file: load the folder, \
                 or pass a VAE file with --vae."
            } else {
                ""
            };
            return Err(Error::load(
                &inventory.origin,
                format!(
                    "not a Stable Diffusion 1.x / 2.x or SDXL checkpoint in the original layout: no \
                     tensors under `{}`; found {}.{hint}",
                    KNOWN_PREFIXES.join("`, `"),
                    inventory.found(),
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
        } else if has(SDXL_CLIP_PREFIX) {
            Some(TextEncoderKind::Clip(SDXL_CLIP_PREFIX))
        } else {
            None
        };
        // The refiner's bigG sits where base's CLIP-L does (`embedders.0`); diffusers makes it the
        // refiner pipeline's text_encoder_2 (its text_encoder is None).
        let text_2 = if has(SDXL_BIG_G_PREFIX) {
            Some(TextEncoderKind::BigG(SDXL_BIG_G_PREFIX))
        } else if has(REFINER_BIG_G_PREFIX) {
            Some(TextEncoderKind::BigG(REFINER_BIG_G_PREFIX))
        } else {
            None
        };
        Ok(SingleFile {
            kind: ModelKind::detect(&inventory),
            source,
            inventory,
            text,
            text_2,
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

    /// SD 1.x, 2.x or SDXL, plain, refiner or inpainting, as diffusers classifies the file.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    pub fn text_encoder_kind(&self) -> Option<TextEncoderKind> {
        self.text
    }

    /// SDXL's second text encoder (bigG), if the file holds it.
    pub fn text_encoder_2_kind(&self) -> Option<TextEncoderKind> {
        self.text_2
    }

    pub fn has(&self, component: Component) -> bool {
        match component {
            Component::Unet => self.inventory.any_under(UNET_PREFIX),
            Component::Vae => self.inventory.any_under(VAE_PREFIX),
            Component::TextEncoder => self.text.is_some(),
            Component::TextEncoder2 => self.text_2.is_some(),
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
        infer_vae::vae_config(&self.inventory, VaeLayout::Original(VAE_PREFIX), self.kind)
    }

    pub fn vae_config(&self) -> Result<VaeConfig> {
        VaeConfig::from_json(&self.vae_config_json()?.to_string(), self.path())
    }

    /// The text encoder's transformers config.json, inferred from the weights.
    pub fn text_encoder_config_json(&self) -> Result<Value> {
        infer_clip::text_encoder_config(&self.inventory, self.text_kind(Component::TextEncoder)?)
    }

    /// SDXL's second text encoder's config.json (a `CLIPTextModelWithProjection`), inferred.
    pub fn text_encoder_2_config_json(&self) -> Result<Value> {
        infer_clip::text_encoder_config(&self.inventory, self.text_kind(Component::TextEncoder2)?)
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
        self.build(
            Component::Vae,
            Box::new(names),
            device,
            dtype,
            ignore_vae,
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
        let layers = config.num_hidden_layers;
        self.load_text(Component::TextEncoder, layers, device, dtype, |w| {
            ClipTextModel::new(&config, w)
        })
    }

    /// Any component, seen under diffusers names through the layout inferred from the file, built
    /// by `build` (a model kiln's builders do not make yet: SDXL's UNet and bigG with projection);
    /// every tensor of the component must be used, as for the `load_*` methods.
    pub fn load_component<T>(
        &self,
        component: Component,
        device: &Device,
        dtype: DType,
        build: impl FnOnce(&Weights) -> Result<T>,
    ) -> Result<T> {
        match component {
            Component::Unet => {
                let names = UnetNames::from_json(&self.unet_config_json()?)?;
                self.build(component, Box::new(names), device, dtype, |_| false, build)
            }
            Component::Vae => {
                // Only the level count names tensors; the config is not validated here.
                let config: VaeConfig = serde_json::from_value(self.vae_config_json()?)
                    .map_err(|e| Error::load(self.path(), format!("inferred VAE config: {e}")))?;
                let names = VaeNames::new(&config);
                self.build(component, Box::new(names), device, dtype, ignore_vae, build)
            }
            Component::TextEncoder | Component::TextEncoder2 => {
                // SD 2.x runs one OpenCLIP layer fewer than the file has (see infer_clip).
                let kind = self.text_kind(component)?;
                let resblocks = self
                    .inventory
                    .count(&format!("{}transformer.resblocks.", kind.prefix()));
                let layers = match kind {
                    TextEncoderKind::OpenClip => resblocks.saturating_sub(1),
                    _ => resblocks,
                };
                self.load_text(component, layers, device, dtype, build)
            }
        }
    }

    /// A text encoder through its kind's names; OpenCLIP's resblocks from `layers` on may go unused.
    fn load_text<T>(
        &self,
        component: Component,
        layers: usize,
        device: &Device,
        dtype: DType,
        build: impl FnOnce(&Weights) -> Result<T>,
    ) -> Result<T> {
        let kind = self.text_kind(component)?;
        let names: Box<dyn NameMap> = match kind {
            TextEncoderKind::Clip(prefix) => Box::new(ClipNames { prefix }),
            TextEncoderKind::OpenClip => Box::new(OpenClipNames::SD2),
            TextEncoderKind::BigG(prefix) => Box::new(OpenClipNames::big_g(prefix)),
        };
        let ignore = move |name: &str| match kind {
            TextEncoderKind::Clip(_) => name == "embeddings.position_ids",
            TextEncoderKind::OpenClip => {
                let past_last = name
                    .strip_prefix("transformer.resblocks.")
                    .and_then(stored::split_index)
                    .is_some_and(|(i, _)| i >= layers);
                past_last || matches!(name, "text_projection" | "logit_scale" | "attn_mask")
            }
            // SDXL uses every layer and the projection; only CLIP's temperature is left.
            TextEncoderKind::BigG(_) => matches!(name, "logit_scale" | "attn_mask"),
        };
        self.build(component, names, device, dtype, ignore, build)
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
            Component::TextEncoder | Component::TextEncoder2 => t.text_encoder.clone(),
        });
        let mut weights = weights.tallied(tally);
        if component == Component::Unet && self.stream_unet {
            weights = weights.streamed();
        }
        let model = build(&weights)?;
        check_all_used(
            &self.inventory,
            self.prefix(component),
            &used,
            ignore,
            component.label(),
        )?;
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
                Some(kind) => kind.prefix(),
                None => "cond_stage_model.",
            },
            Component::TextEncoder2 => match self.text_2 {
                Some(kind) => kind.prefix(),
                None => SDXL_BIG_G_PREFIX,
            },
        }
    }

    fn text_kind(&self, component: Component) -> Result<TextEncoderKind> {
        let (kind, looked_for) = if component == Component::TextEncoder2 {
            (
                self.text_2,
                format!("`{SDXL_BIG_G_PREFIX}*` or `{REFINER_BIG_G_PREFIX}*`"),
            )
        } else {
            (
                self.text,
                format!("`{CLIP_PREFIX}*`, `{OPEN_CLIP_PREFIX}*` or `{SDXL_CLIP_PREFIX}*`"),
            )
        };
        kind.ok_or_else(|| {
            Error::load(
                self.path(),
                format!(
                    "this single file has no {} (no {looked_for} tensors)",
                    component.label()
                ),
            )
        })
    }
}

/// Un-pruned checkpoints keep the VAE's training loss (LPIPS, discriminator) under `loss.`.
fn ignore_vae(name: &str) -> bool {
    name.starts_with("loss.")
}

/// Fails on any stored tensor under `prefix` that the built model did not load (`used`) and
/// `ignore` (given the name after the prefix) does not excuse.
fn check_all_used(
    inventory: &Inventory,
    prefix: &str,
    used: &UsedNames,
    ignore: impl Fn(&str) -> bool,
    label: &str,
) -> Result<()> {
    let used = used.lock().map(|u| u.clone()).unwrap_or_default();
    let unused: Vec<&String> = inventory
        .under(prefix)
        .filter(|n| !used.contains(*n) && !ignore(&n[prefix.len()..]))
        .collect();
    if unused.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = unused
        .iter()
        .take(8)
        .map(|n| format!("`{n}` {:?}", inventory.get(n).unwrap_or_default()))
        .collect();
    Err(Error::load(
        &inventory.origin,
        format!(
            "{} tensor(s) of the {label} were not used by the model built from the config, so the \
             checkpoint does not have that architecture: {}{}",
            unused.len(),
            shown.join(", "),
            if unused.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ),
    ))
}
