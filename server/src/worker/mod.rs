//! The worker: one thread per device that takes jobs off the queue in order, fits the job to the
//! memory budget if there is one (the library's plan -> fit -> load path, as `kiln generate
//! --max-vram`), loads the job's model if the one in memory is another or was loaded otherwise,
//! generates with a step callback that reports progress and previews and obeys skip / interrupt /
//! cancel, and answers the waiting request. Chat jobs run in the LLM engine's slots (`chat.rs`).

mod chat;
mod controls;
mod refiner;
mod upscale;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::http::StatusCode;
use base64::Engine;
use kiln_models::image::infotext::PNG_KEYWORD;
use kiln_models::image::png::encode_png;
use kiln_models::pipeline::{
    add_refiner, add_vae, generate_controlled, infotext, prepare_with, GenerationParams,
    LoadOptions, PipelineError, Prepared, StableDiffusion, StepControl,
};
use kiln_models::rng::RngKind;
use kiln_models::schedulers::SamplerSpec;
use kiln_models::vae::VaeTiling;
use kiln_nn::weights::WeightType;
use kiln_runtime::{Device, DeviceChoice};

use crate::catalog::Catalog;
use crate::controlnets::ControlRequest;
use crate::error::{ApiError, ApiResult};
use crate::llm_models::LlmSettings;
use crate::metrics::Metrics;
use crate::preview::preview_png;
use crate::progress::{timestamp_now, ProgressHub};
use crate::queue::{Job, JobOutput, JobRequest, OutputImage, Queue, Work};
use controls::{control_units, HeldControlNets};
use refiner::HeldRefiner;

pub struct Worker {
    device: Device,
    queue: Arc<Queue>,
    progress: Arc<ProgressHub>,
    catalog: Arc<Catalog>,
    preview_every: usize,
    settings: LoadSettings,
    loaded: Option<Loaded>,
    /// The refiner the last job asked for (`refiner_checkpoint`), kept while jobs ask for it.
    refiner: Option<HeldRefiner>,
    /// The last budget fit and the job shape it was made for: a job of the same shape reuses it
    /// (a plan runs the model once on the CPU backend).
    last_fit: Option<(PlanKey, Prepared)>,
    llm_settings: LlmSettings,
    llm: Option<chat::LoadedLlm>,
    upscaler: Option<upscale::LoadedUpscaler>,
    metrics: Arc<Metrics>,
}

/// How models are loaded: `--weight-type`, `--max-vram` and `--vae`.
#[derive(Clone, Debug)]
pub struct LoadSettings {
    pub weight_type: WeightType,
    pub max_vram: Option<u64>,
    pub vae: Option<VaeChoice>,
}

/// `--vae FILE`, with what the infotext says of it (A1111's `VAE` and `VAE hash`), hashed once at
/// start-up.
#[derive(Clone, Debug)]
pub struct VaeChoice {
    pub path: PathBuf,
    pub name: String,
    pub hash: String,
}

/// The model in memory and how it was loaded.
struct Loaded {
    path: PathBuf,
    options: LoadOptions,
    model: StableDiffusion,
    /// ControlNets loaded for this model, kept between jobs.
    controlnets: HeldControlNets,
}

/// Opens the device on a new thread and runs jobs there until the queue closes. Fails (without
/// a thread left behind) when the device cannot be opened.
/// What the worker shares with the HTTP side.
pub struct Shared {
    pub queue: Arc<Queue>,
    pub progress: Arc<ProgressHub>,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
}

pub fn spawn(
    choice: DeviceChoice,
    shared: Shared,
    settings: LoadSettings,
    llm_settings: LlmSettings,
    preview_every: usize,
) -> Result<(JoinHandle<()>, String), String> {
    let Shared {
        queue,
        progress,
        catalog,
        metrics,
    } = shared;
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
                settings,
                loaded: None,
                refiner: None,
                last_fit: None,
                llm_settings,
                llm: None,
                upscaler: None,
                metrics,
            };
            while let Some(job) = worker.queue.pop() {
                match job.work {
                    Work::Image { .. } => worker.run(job),
                    Work::Chat(_) => worker.run_chat(job),
                    Work::Upscale { .. } => worker.run_upscale(job),
                }
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
        let Job { id, work, control } = job;
        let Work::Image { request, reply } = work else {
            self.queue.finish(id);
            return;
        };
        if control.is_cancelled() || reply.is_closed() {
            self.queue.finish(id);
            return;
        }
        if self.settings.max_vram.is_some() {
            // Under a budget only one model is held.
            self.unload_llm();
        }
        let timestamp = timestamp_now();
        self.progress.start(id, &timestamp);
        let result = self.generate(id, &request, &control, timestamp);
        let status = match &result {
            _ if control.is_cancelled() => "cancelled",
            Ok(out) if out.interrupted => "interrupted",
            Ok(_) => "done",
            Err(_) => "error",
        };
        self.queue.finish(id);
        self.progress.finish(id, status);
        let _ = reply.send(result);
    }

    /// How to load the model at `path` and run `params`: as `--weight-type` says, fitted to the
    /// budget when there is one. A job too big for the budget is refused here, before any load.
    fn prepare(
        &mut self,
        path: &Path,
        params: &GenerationParams,
        controls: &[ControlRequest],
        wanted: Option<&refiner::Wanted>,
    ) -> ApiResult<Prepared> {
        let options = LoadOptions {
            vae: self.settings.vae.as_ref().map(|v| v.path.clone()),
            ..LoadOptions::weight_type(self.settings.weight_type)
        };
        let Some(budget) = self.settings.max_vram else {
            return Ok(Prepared::unbudgeted(options));
        };
        let key = PlanKey::new(path, params, controls).with_refiner(wanted);
        if let Some((_, prepared)) = self.last_fit.as_ref().filter(|(k, _)| *k == key) {
            return Ok(prepared.clone());
        }
        // The plan runs a zero-weight copy of the model on the CPU backend: outside the budget
        // (which, on the CPU backend, is that backend's).
        self.device.set_memory_budget(None);
        let quantization = options.quantization;
        let (device, base_options) = (&self.device, options.clone());
        let prepared = prepare_with(path, device, options, Some(budget), true, |model| {
            check_size(model, params)?;
            let mut params = params.clone();
            // Zero-weight ControlNets and refiner: the plan counts their weights and activations.
            params.controls = control_units(model, quantization, controls, None)?;
            params.refiner = refiner::open(wanted, model, device, &base_options)?;
            Ok::<_, ApiError>(params)
        });
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                // Whatever is loaded stays within the budget for the next job.
                self.device.set_memory_budget(Some(budget));
                return Err(e);
            }
        };
        // One line when the choice changes, as `kiln generate --max-vram` prints it.
        let line = prepared.describe();
        if line != self.last_fit.as_ref().and_then(|(_, p)| p.describe()) {
            if let Some(line) = line {
                eprintln!("kiln serve: {line}");
            }
        }
        self.last_fit = Some((key, prepared.clone()));
        Ok(prepared)
    }

    /// The model at `path` loaded as `prepared` says: the one in memory if it was loaded so, else
    /// a fresh load (the old one freed first). Sets the device budget either way.
    fn model(&mut self, path: &Path, prepared: &Prepared) -> ApiResult<&StableDiffusion> {
        let current = self
            .loaded
            .as_ref()
            .is_some_and(|l| l.path == path && l.options == prepared.options);
        if current {
            prepared.set_device_budget(&self.device);
        } else {
            // Free the old model's memory before loading the next one.
            self.loaded = None;
            self.metrics
                .set_loaded(crate::catalog::ModelKind::Image, None);
            let model = prepared
                .load(path, &self.device)
                .map_err(|e| ApiError::internal(format!("cannot load model: {e}")))?;
            self.loaded = Some(Loaded {
                path: path.to_path_buf(),
                options: prepared.options.clone(),
                model,
                controlnets: HashMap::new(),
            });
            self.metrics
                .set_loaded(crate::catalog::ModelKind::Image, Some(path));
        }
        match &self.loaded {
            Some(l) => Ok(&l.model),
            None => Err(ApiError::internal("model not loaded")),
        }
    }

    fn generate(
        &mut self,
        id: u64,
        request: &JobRequest,
        control: &Arc<crate::queue::JobControl>,
        job_timestamp: String,
    ) -> ApiResult<JobOutput> {
        let entry = &request.model;
        let hash = self.catalog.sha256(entry).map(|mut h| {
            h.truncate(10);
            h
        });
        let (progress, every) = (self.progress.clone(), self.preview_every);
        let control = control.clone();
        let wanted = request.refiner.as_ref();
        let prepared = self.prepare(&entry.path, &request.params, &request.controls, wanted)?;
        let mut params = request.params.clone();
        prepared.apply(&mut params);
        refiner::release_unless(&mut self.refiner, wanted, &prepared.options);
        self.model(&entry.path, &prepared)?;
        let loaded = self
            .loaded
            .as_mut()
            .ok_or_else(|| ApiError::internal("model not loaded"))?;
        // Loaded as the main model was: streamed when it streams, within the budget set for it.
        params.refiner = refiner::for_job(
            &mut self.refiner,
            wanted,
            &loaded.model,
            &self.device,
            &prepared.options,
        )?;
        params.controls = control_units(
            &loaded.model,
            loaded.options.quantization,
            &request.controls,
            Some(&mut loaded.controlnets),
        )?;
        let params = &params;
        let model = self.model(&entry.path, &prepared)?;
        let scale = model.vae_scale_factor();
        check_size(model, params)?;
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
        if control.is_cancelled() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cancelled",
                "the job was cancelled",
            ));
        }
        let mut out = Vec::with_capacity(images.len());
        for image in &images {
            let mut info = infotext(params, image.seed, &entry.model_name, hash.as_deref());
            if let Some(vae) = &self.settings.vae {
                add_vae(&mut info, &vae.name, Some(&vae.hash));
            }
            if let (Some((entry, _)), Some(r)) = (&request.refiner, &params.refiner) {
                let hash = self.catalog.sha256(entry).unwrap_or_default();
                add_refiner(
                    &mut info,
                    &entry.model_name,
                    &hash[..hash.len().min(10)],
                    r.switch_at,
                );
            }
            let text = info.format();
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
            interrupted: interrupted || control.is_interrupted(),
        })
    }
}

/// Width and height must be multiples of the model's size multiple.
fn check_size(model: &StableDiffusion, params: &GenerationParams) -> ApiResult<()> {
    let m = model.size_multiple();
    for (field, v) in [("width", params.width), ("height", params.height)] {
        if !v.is_multiple_of(m) {
            return Err(ApiError::invalid(
                field,
                format!("{field} {v} must be a multiple of {m} for this model"),
            ));
        }
    }
    Ok(())
}

/// What a job's memory plan depends on. The planner runs one step of one batch with a fixed seed
/// at full strength, so the seed, steps, batch count and strength are left out; the prompts stay
/// (their token chunks size the text context).
#[derive(Debug, PartialEq)]
struct PlanKey {
    path: PathBuf,
    prompt: String,
    negative_prompt: String,
    width: usize,
    height: usize,
    batch_size: usize,
    guidance: bool,
    clip_skip: usize,
    sampler: SamplerSpec,
    rng: RngKind,
    vae_tiling: Option<VaeTiling>,
    /// The init image's size and whether it has a mask.
    init: Option<(usize, usize, bool)>,
    /// The hires fix's second-pass size.
    hires: Option<(usize, usize)>,
    /// The ControlNets' paths, and whether each runs on the conditional half only (a smaller
    /// ControlNet batch than a balanced unit's).
    controls: Vec<(PathBuf, bool)>,
    /// The refiner's path.
    refiner: Option<PathBuf>,
}

impl PlanKey {
    fn new(path: &Path, p: &GenerationParams, controls: &[ControlRequest]) -> PlanKey {
        PlanKey {
            path: path.to_path_buf(),
            prompt: p.prompt.clone(),
            negative_prompt: p.negative_prompt.clone(),
            width: p.width,
            height: p.height,
            batch_size: p.batch_size,
            guidance: p.cfg_scale > 1.0,
            clip_skip: p.clip_skip,
            sampler: p.sampler,
            rng: p.rng,
            vae_tiling: p.vae_tiling,
            init: p
                .init
                .as_ref()
                .map(|i| (i.image.width, i.image.height, i.mask.is_some())),
            hires: p.hires.as_ref().map(|h| (h.width, h.height)),
            controls: controls
                .iter()
                .map(|c| (c.path.clone(), c.mode.conditional_only()))
                .collect(),
            refiner: None,
        }
    }

    /// The key of a job with a refiner: its weights and steps count (not the switch, which moves
    /// steps between the two models).
    fn with_refiner(self, wanted: Option<&refiner::Wanted>) -> PlanKey {
        PlanKey {
            refiner: wanted.map(|(entry, _)| entry.path.clone()),
            ..self
        }
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> ApiError {
        pipeline_error(e)
    }
}

/// Parameters the model cannot honour are the client's to fix (400), and so is a job the
/// server's memory budget cannot hold (400, naming the smallest budget that would); the rest is
/// the server's.
fn pipeline_error(e: PipelineError) -> ApiError {
    match e {
        PipelineError::Invalid(msg) => ApiError::invalid("parameters", msg),
        PipelineError::OverBudget { msg, .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "over_memory_budget", msg)
        }
        // Sampler names were checked already: what is left is the step count (more steps than
        // the model was trained with).
        PipelineError::Scheduler(e) => ApiError::invalid("steps", e.to_string()),
        PipelineError::Prompt(e) => ApiError::invalid("prompt", e.to_string()),
        // A LoRA the prompt chose that does not fit the model.
        PipelineError::Lora(e) => ApiError::invalid("prompt", e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_of_one_shape_share_a_plan() {
        let path = Path::new("model");
        let mut a = GenerationParams::new("a red circle");
        let key = PlanKey::new(path, &a, &[]);
        (a.seed, a.steps, a.batch_count, a.cfg_scale) = (9, 40, 3, 4.0);
        assert_eq!(PlanKey::new(path, &a, &[]), key);
        a.width = 256;
        assert_ne!(PlanKey::new(path, &a, &[]), key);
        let mut b = GenerationParams::new("a red circle");
        b.cfg_scale = 1.0;
        assert_ne!(PlanKey::new(path, &b, &[]), key);
        assert_ne!(
            PlanKey::new(Path::new("other"), &b, &[]),
            PlanKey::new(path, &b, &[])
        );
        // A ControlNet changes the plan: its weights and activations count.
        let unit = ControlRequest {
            field: "args[0]".into(),
            name: "canny".into(),
            path: PathBuf::from("canny.safetensors"),
            module: "canny".into(),
            settings: kiln_models::preprocess::PreprocessorSettings::defaults("canny").unwrap(),
            image: kiln_models::image::RgbImage::new(8, 8, vec![0; 192]).unwrap(),
            weight: 1.0,
            guidance_start: 0.0,
            guidance_end: 1.0,
            mode: Default::default(),
            resize: Default::default(),
        };
        let a = GenerationParams::new("a red circle");
        let with_unit = PlanKey::new(path, &a, std::slice::from_ref(&unit));
        assert_ne!(with_unit, key);
        // So does a unit on the conditional half only: half the ControlNet's batch.
        let cond_only = ControlRequest {
            mode: kiln_models::pipeline::ControlMode::ControlNet,
            ..unit
        };
        assert_ne!(PlanKey::new(path, &a, &[cond_only]), with_unit);
        // So does a refiner (both models' weights count), but not its switch.
        let refiner = |switch: f64| {
            let entry = crate::catalog::ModelEntry {
                name: "refiner".into(),
                model_name: "refiner".into(),
                path: PathBuf::from("refiner"),
                kind: crate::catalog::ModelKind::Image,
            };
            PlanKey::new(path, &a, &[]).with_refiner(Some(&(entry, switch)))
        };
        assert_ne!(refiner(0.8), key);
        assert_eq!(refiner(0.8), refiner(0.5));
        assert_eq!(PlanKey::new(path, &a, &[]).with_refiner(None), key);
    }

    #[test]
    fn a_job_over_the_budget_is_the_clients_to_shrink() {
        let e = ApiError::from(PipelineError::OverBudget {
            minimum: 1 << 20,
            msg: "needs at least 1.00 MiB".into(),
        });
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.error, "over_memory_budget");
        assert!(e.detail.contains("at least 1.00 MiB"));
    }
}
