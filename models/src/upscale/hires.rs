//! An upscaler model file as hires fix's image upscaler (A1111's `hr_upscaler` naming an ESRGAN
//! model): loaded on the generation's device when the first pass is done, run in tiles, then
//! resized to the exact second-pass size.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kiln_runtime::{DType, Device};

use super::{TileOptions, Upscaler, UpscalerModel};
use crate::image::RgbImage;
use crate::pipeline::{ImageUpscaler, PipelineError};

pub struct FileUpscaler {
    /// The name A1111 lists it under (the file's stem).
    pub name: String,
    pub path: PathBuf,
    pub tiles: TileOptions,
    /// The weights once loaded, for the device they were loaded on: a batch's images (and the
    /// next batches) reuse them instead of reading the file per image.
    loaded: Mutex<Option<(String, Arc<UpscalerModel>)>>,
}

impl FileUpscaler {
    /// `path` checked now (its header: a pickle or a file of no known layout is refused before
    /// anything is generated); the weights load when the upscaler runs.
    pub fn new(path: PathBuf) -> Result<FileUpscaler, PipelineError> {
        UpscalerModel::probe(&path)
            .map_err(|e| PipelineError::invalid(format!("upscaler {}: {e}", path.display())))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(FileUpscaler {
            name,
            path,
            tiles: TileOptions::default(),
            loaded: Mutex::new(None),
        })
    }
}

impl ImageUpscaler for FileUpscaler {
    fn name(&self) -> &str {
        &self.name
    }

    fn upscale_to(
        &self,
        image: &RgbImage,
        width: usize,
        height: usize,
        device: &Device,
    ) -> Result<RgbImage, PipelineError> {
        let model = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            match loaded.as_ref().filter(|(on, _)| *on == device.name()) {
                Some((_, model)) => model.clone(),
                None => {
                    let model = Arc::new(UpscalerModel::load(&self.path, device, DType::F32)?);
                    *loaded = Some((device.name(), model.clone()));
                    model
                }
            }
        };
        Ok(Upscaler::Model(model).upscale_to(image, width, height, self.tiles)?)
    }
}
