//! The vision tower and projector of a Mistral3 checkpoint: an image in, the rows that replace
//! its `[IMG]` token embeddings out.

use kiln_nn::weights::Weights;
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use super::config::VisionConfig;
use super::encoder::PixtralEncoder;
use super::preprocess::{ImageProcessor, PreparedImage};
use super::projector::Projector;

/// Where the vision tensors sit: transformers 5 writes `model.vision_tower.*`, the published
/// Mistral Small 3.1 files and transformers 4 `vision_tower.*`.
const LAYOUTS: [(&str, &str); 2] = [
    ("vision_tower", "multi_modal_projector"),
    ("model.vision_tower", "model.multi_modal_projector"),
];

pub struct VisionModel {
    pub config: VisionConfig,
    pub encoder: PixtralEncoder,
    pub projector: Projector,
    device: Device,
    dtype: DType,
}

impl VisionModel {
    /// Builds the tower and projector from `weights` at the checkpoint's root.
    pub fn new(config: VisionConfig, weights: &Weights) -> Result<VisionModel> {
        let (tower, projector) = LAYOUTS
            .iter()
            .find(|(tower, _)| weights.contains(&format!("{tower}.patch_conv.weight")))
            .ok_or_else(|| {
                Error::load(
                    weights.origin(),
                    "no vision tower found (looked for `vision_tower.patch_conv.weight` and `model.vision_tower.patch_conv.weight`)",
                )
            })?;
        VisionModel::with_prefixes(config, weights, tower, projector)
    }

    /// Builds the tower from `weights` at `tower` and the projector at `projector` (random
    /// weights for benchmarks have no names to detect).
    pub fn with_prefixes(
        config: VisionConfig,
        weights: &Weights,
        tower: &str,
        projector: &str,
    ) -> Result<VisionModel> {
        let encoder =
            PixtralEncoder::new(&weights.pp(tower), &config.encoder, config.feature_layers)?;
        let projector = Projector::new(&weights.pp(projector), &config)?;
        Ok(VisionModel {
            encoder,
            projector,
            device: weights.device().clone(),
            dtype: weights.dtype(),
            config,
        })
    }

    /// The preprocessing this model expects (see `VisionConfig::processor`).
    pub fn processor(&self) -> ImageProcessor {
        self.config.processor()
    }

    /// Encodes one prepared image into `[rows * cols, text_hidden]` rows (one per `[IMG]`
    /// token, in prompt order) on the model's device.
    pub fn encode(&self, image: &PreparedImage) -> Result<Tensor> {
        let c = &self.config;
        let m = c.spatial_merge_size;
        if image.rows * m * c.encoder.patch_size != image.height
            || image.cols * m * c.encoder.patch_size != image.width
        {
            return Err(Error::shape(
                "vision encode",
                format!(
                    "a {}x{} image for a {}x{} token grid: this model needs {} pixels per token side",
                    image.width,
                    image.height,
                    image.cols,
                    image.rows,
                    m * c.encoder.patch_size
                ),
            ));
        }
        let pixels = Tensor::from_f32(
            &self.device,
            &[c.encoder.num_channels, image.height, image.width],
            self.dtype,
            &image.pixels,
        )?;
        let features = self.encoder.forward(&pixels)?;
        self.projector
            .forward(&features, image.rows * m, image.cols * m)
    }
}
