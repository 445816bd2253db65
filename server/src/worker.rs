//! The worker: one thread per device that takes jobs off the queue in order, loads the job's
//! model if it is not the one in memory, generates with a step callback that reports progress and
//! previews and obeys skip / interrupt / cancel, and answers the waiting request.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use base64::Engine;
use kiln_models::image::infotext::PNG_KEYWORD;
use kiln_models::image::png::encode_png;
use kiln_models::pipeline::{
    generate_controlled, infotext, PipelineError, StableDiffusion, StepControl,
};
use kiln_nn::weights::WeightType;
use kiln_runtime::{Device, DeviceChoice};

use crate::catalog::Catalog;
use crate::error::{ApiError, ApiResult};
use crate::preview::preview_png;
use crate::progress::{timestamp_now, ProgressHub};
use crate::queue::{Job, JobOutput, OutputImage, Queue};

pub struct Worker {
    device: Device,
    queue: Arc<Queue>,
    progress: Arc<ProgressHub>,
    catalog: Arc<Catalog>,
    preview_every: usize,
    weight_type: WeightType,
    loaded: Option<(PathBuf, StableDiffusion)>,
}

/// Opens the device on a new thread and runs jobs there until the queue closes. Fails (without
/// a thread left behind) when the device cannot be opened.
pub fn spawn(
    choice: DeviceChoice,
    queue: Arc<Queue>,
    progress: Arc<ProgressHub>,
    catalog: Arc<Catalog>,
    preview_every: usize,
    weight_type: WeightType,
) -> Result<(JoinHandle<()>, String), String> {
    let (opened, result) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("kiln-worker".into())
        .spawn(move || {
            let device = match Device::open(choice) {
                Ok(d) => d,
                Err(e) => {
                    let _ = opened.send(Err(format!("cannot open device {choice}: {e}")));
                    return;
                }
            };
            let _ = opened.send(Ok(device.name()));
            let mut worker = Worker {
                device,
                queue,
                progress,
                catalog,
                preview_every: preview_every.max(1),
                weight_type,
                loaded: None,
            };
            while let Some(job) = worker.queue.pop() {
                worker.run(job);
            }
        })
        .map_err(|e| format!("cannot start the worker thread: {e}"))?;
    match result.recv() {
        Ok(Ok(name)) => Ok((handle, name)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err("the worker thread ended while opening the device".into()),
    }
}

impl Worker {
    fn run(&mut self, job: Job) {
        let id = job.id;
        if job.control.is_cancelled() || job.reply.is_closed() {
            self.queue.finish(id);
            return;
        }
        let timestamp = timestamp_now();
        self.progress.start(id, &timestamp);
        let result = self.generate(&job, timestamp);
        let status = match &result {
            _ if job.control.is_cancelled() => "cancelled",
            Ok(out) if out.interrupted => "interrupted",
            Ok(_) => "done",
            Err(_) => "error",
        };
        self.queue.finish(id);
        self.progress.finish(id, status);
        let _ = job.reply.send(result);
    }

    fn model(&mut self, path: &PathBuf) -> ApiResult<&StableDiffusion> {
        if self.loaded.as_ref().is_none_or(|(p, _)| p != path) {
            // Free the old model's memory before loading the next one.
            self.loaded = None;
            let model = StableDiffusion::load_weight_type(path, &self.device, self.weight_type)
                .map_err(|e| ApiError::internal(format!("cannot load model: {e}")))?;
            self.loaded = Some((path.clone(), model));
        }
        match &self.loaded {
            Some((_, m)) => Ok(m),
            None => Err(ApiError::internal("model not loaded")),
        }
    }

    fn generate(&mut self, job: &Job, job_timestamp: String) -> ApiResult<JobOutput> {
        let entry = &job.request.model;
        let params = &job.request.params;
        let hash = self.catalog.sha256(entry).map(|mut h| {
            h.truncate(10);
            h
        });
        let (progress, every, id) = (self.progress.clone(), self.preview_every, job.id);
        let control = job.control.clone();
        let model = self.model(&entry.path)?;
        let scale = model.vae_scale_factor();
        let m = model.size_multiple();
        for (field, v) in [("width", params.width), ("height", params.height)] {
            if !v.is_multiple_of(m) {
                return Err(ApiError::invalid(
                    field,
                    format!("{field} {v} must be a multiple of {m} for this model"),
                ));
            }
        }
        let mut interrupted = false;
        let images = generate_controlled(model, params, &mut |step| {
            let p = step.progress;
            let preview = (p.step % every == 0 || p.step == p.total)
                .then(|| preview_png(step.latents, step.shape, scale))
                .flatten()
                .map(|png| base64::engine::general_purpose::STANDARD.encode(png));
            progress.step(id, p.step, p.total, preview);
            let next = control.next_step();
            match next {
                StepControl::Skip => progress.mark(true, false),
                StepControl::Interrupt => {
                    interrupted = true;
                    progress.mark(false, true);
                }
                StepControl::Continue => {}
            }
            next
        })
        .map_err(pipeline_error)?;
        if job.control.is_cancelled() {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "cancelled",
                "the job was cancelled",
            ));
        }
        let mut out = Vec::with_capacity(images.len());
        for image in &images {
            let text = infotext(params, image.seed, &entry.model_name, hash.as_deref()).format();
            let png = encode_png(&image.to_rgb8(), &[(PNG_KEYWORD, &text)])
                .map_err(|e| ApiError::internal(e.to_string()))?;
            out.push(OutputImage {
                seed: image.seed,
                png,
                infotext: text,
            });
        }
        Ok(JobOutput {
            images: out,
            model_name: entry.model_name.clone(),
            model_hash: hash,
            job_timestamp,
            interrupted: interrupted || job.control.is_interrupted(),
        })
    }
}

/// Parameters the model cannot honour are the client's to fix (400); the rest is the server's.
fn pipeline_error(e: PipelineError) -> ApiError {
    match e {
        PipelineError::Invalid(msg) => ApiError::invalid("parameters", msg),
        // Sampler names were checked already: what is left is the step count (more steps than
        // the model was trained with).
        PipelineError::Scheduler(e) => ApiError::invalid("steps", e.to_string()),
        PipelineError::Prompt(e) => ApiError::invalid("prompt", e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}
