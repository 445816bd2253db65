//! The worker's Extras side: loads the upscaler files a job names (the last one stays in memory,
//! so repeated requests with one model load it once) on the worker's device and runs A1111's
//! Extras upscale from the library.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_models::image::png::encode_png;
use kiln_models::upscale::extras::extras_upscale;
use kiln_models::upscale::{TileOptions, Upscaler, UpscalerModel};
use kiln_runtime::{DType, Device};

use super::Worker;
use crate::error::{ApiError, ApiResult};
use crate::progress::timestamp_now;
use crate::queue::{Job, UpscaleJob, UpscaleOutput, UpscalerChoice, Work};

/// The upscaler model in memory.
pub struct LoadedUpscaler {
    path: PathBuf,
    model: Arc<UpscalerModel>,
}

impl Worker {
    pub(super) fn run_upscale(&mut self, job: Job) {
        let Job { id, work, control } = job;
        let Work::Upscale { job, reply } = work else {
            self.queue.finish(id);
            return;
        };
        if control.is_cancelled() || reply.is_closed() {
            self.queue.finish(id);
            return;
        }
        self.progress.start(id, &timestamp_now());
        let result = self.upscale(&job);
        self.queue.finish(id);
        self.progress
            .finish(id, if result.is_ok() { "done" } else { "error" });
        let _ = reply.send(result);
    }

    fn upscale(&mut self, job: &UpscaleJob) -> ApiResult<UpscaleOutput> {
        let first = match &job.first {
            Some(choice) => Some((choice.name(), self.upscaler(choice, "upscaler_1")?)),
            None => None,
        };
        let second = match &job.second {
            Some((choice, visibility)) => Some((
                choice.name(),
                self.upscaler(choice, "upscaler_2")?,
                *visibility,
            )),
            None => None,
        };
        let out = extras_upscale(
            &job.image,
            job.resize,
            first.as_ref().map(|(n, u)| (*n, u)),
            second.as_ref().map(|(n, u, v)| (*n, u, *v)),
            TileOptions::default(),
        )
        .map_err(|e| ApiError::internal(format!("upscaling failed: {e}")))?;
        let png = encode_png(&out.image, &[]).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(UpscaleOutput {
            png,
            infotext: out.infotext(),
        })
    }

    /// The upscaler a choice names, loading its file unless it is the one in memory.
    fn upscaler(&mut self, choice: &UpscalerChoice, field: &str) -> ApiResult<Upscaler> {
        let path = match choice {
            UpscalerChoice::Builtin(name) => {
                return Upscaler::builtin(name).ok_or_else(|| {
                    ApiError::invalid(field, format!("no built-in upscaler {name:?}"))
                })
            }
            UpscalerChoice::File { path, .. } => path,
        };
        if let Some(loaded) = self.upscaler.as_ref().filter(|l| l.path == *path) {
            return Ok(Upscaler::Model(loaded.model.clone()));
        }
        self.upscaler = None;
        let model = Arc::new(load(path, &self.device).map_err(|e| ApiError::invalid(field, e))?);
        self.upscaler = Some(LoadedUpscaler {
            path: path.clone(),
            model: model.clone(),
        });
        Ok(Upscaler::Model(model))
    }
}

/// f16 on a GPU that has it (as Real-ESRGAN runs half by default), f32 on the CPU backend.
fn load(path: &Path, device: &Device) -> Result<UpscalerModel, String> {
    let dtype = match device {
        Device::Cpu => DType::F32,
        _ => DType::F16,
    };
    UpscalerModel::load(path, device, dtype).map_err(|e| format!("cannot load upscaler: {e}"))
}
