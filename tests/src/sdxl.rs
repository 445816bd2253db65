//! SDXL models put together from a single file and the matching fixture folder.

use std::path::Path;

use kiln_models::clip::ClipTextModelWithProjection;
use kiln_models::pipeline::{ModelSource, Sdxl, StableDiffusion};
use kiln_models::single_file::{Component, ModelKind, SingleFile};
use kiln_runtime::{DType, Device};

/// The SDXL model in single file `file` (at `path`, named `name`), configs from `folder`.
pub fn from_single_file(
    file: &SingleFile,
    path: &Path,
    name: &str,
    folder: &StableDiffusion,
    dev: &Device,
) -> StableDiffusion {
    // The tiny weights do not fit the configs inferred for a real checkpoint; a refiner's folder
    // has no CLIP-L, so neither has the model.
    let x = folder.sdxl.as_ref().unwrap();
    let te2_config = x.text_encoder_2.config().clone();
    let text_encoder_2 = file
        .load_component(Component::TextEncoder2, dev, DType::F32, |w| {
            ClipTextModelWithProjection::new(&te2_config, w)
        })
        .unwrap();
    StableDiffusion {
        unet: file
            .load_unet(Some(folder.unet.config()), dev, DType::F32)
            .unwrap(),
        vae: file
            .load_vae(Some(folder.vae.config()), dev, DType::F32)
            .unwrap(),
        text_encoder: folder.text_encoder.as_ref().map(|t| {
            file.load_text_encoder(Some(t.config()), dev, DType::F32)
                .unwrap()
        }),
        tokenizer: folder.tokenizer.clone(),
        sdxl: Some(Sdxl {
            text_encoder_2,
            tokenizer_2: x.tokenizer_2.clone(),
            requires_aesthetics_score: file.kind() == ModelKind::SdxlRefiner,
        }),
        scheduler_config: folder.scheduler_config.clone(),
        sample_size: folder.sample_size,
        source: ModelSource {
            name: name.into(),
            hash_file: path.to_path_buf(),
            vae: None,
        },
        planned: None,
    }
    .checked()
    .unwrap()
}
