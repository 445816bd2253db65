//! `kiln bench sd`: per-stage times of one txt2img run (text encoding, every UNet step, VAE decode),
//! it/s and peak device memory.
//!
//! The samplers read the model output back to the host every step, so a step has finished on the
//! device when its progress callback runs: the gaps between callbacks are step times on any backend.
//! On a GPU each step's host overhead is reported too (`overhead.rs`).

mod overhead;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use kiln_models::pipeline::{
    encode_pair, generate, prepare_with, GenerationParams, LoadOptions, Offload, StableDiffusion,
};
use kiln_models::schedulers::SamplerSpec;
use kiln_models::vae::VaeTiling;
use kiln_nn::weights::WeightType;
use kiln_runtime::memory::format_bytes;
use kiln_runtime::Device;

use crate::generate::parse_max_vram;
use serde::Serialize;

#[derive(clap::Args)]
pub struct SdBenchArgs {
    /// Model folder or .safetensors checkpoint (default: the bundled tiny model).
    #[arg(short = 'm', long)]
    model: Option<PathBuf>,
    #[arg(short = 'p', long, default_value = "a red circle on a blue background")]
    prompt: String,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 7.0)]
    cfg_scale: f32,
    /// Image width (default: the model's).
    #[arg(short = 'W', long)]
    width: Option<usize>,
    /// Image height (default: the model's).
    #[arg(short = 'H', long)]
    height: Option<usize>,
    #[arg(long, default_value = "Euler")]
    sampler: String,
    /// Weight storage, as `kiln generate --weight-type`: f32, f16, q8_0, q4_0 or nf4 (`--dtype`
    /// is the older name).
    #[arg(long, alias = "dtype", default_value = "f32")]
    weight_type: String,
    /// Keep peak device memory under SIZE, as `kiln generate --max-vram` (the plan it needs runs
    /// first and is not timed).
    #[arg(long, value_name = "SIZE")]
    max_vram: Option<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Decode with the VAE in tiles (see `kiln generate --help`).
    #[arg(long)]
    vae_tiling: bool,
    /// VAE tile size in latent pixels.
    #[arg(long, default_value_t = VaeTiling::default().tile)]
    vae_tile_size: usize,
    /// Overlap of neighbouring VAE tiles in latent pixels.
    #[arg(long, default_value_t = VaeTiling::default().overlap)]
    vae_tile_overlap: usize,
    /// Run the VAE on the CPU backend; its memory is reported apart from the device's.
    #[arg(long)]
    vae_on_cpu: bool,
    /// Run the text encoder on the CPU backend; its memory is reported apart from the device's.
    #[arg(long)]
    text_encoder_on_cpu: bool,
}

#[derive(Serialize)]
struct SdReport {
    tool: &'static str,
    version: &'static str,
    device: String,
    model: String,
    /// The compute dtype (f32 for the quantised weight types).
    dtype: String,
    weight_type: String,
    /// The VAE's tile size in latent pixels, when tiled (by --vae-tiling or chosen for --max-vram).
    vae_tiling: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_vram_bytes: Option<u64>,
    /// Whether --max-vram made the UNet's blocks stream from host memory.
    unet_streamed: bool,
    width: usize,
    height: usize,
    steps: usize,
    cfg_scale: f32,
    load_ms: f64,
    text_encoding_ms: f64,
    /// The first step also includes latent set-up (noise draw, scheduler build).
    step_ms: Vec<f64>,
    mean_step_ms: f64,
    its_per_second: f64,
    vae_decode_ms: f64,
    total_ms: f64,
    peak_memory_bytes: u64,
    peak_reserved_bytes: u64,
    /// Device bytes held by weights after loading (the rest of the peak is activations).
    weight_bytes: u64,
    /// With --vae-on-cpu / --text-encoder-on-cpu on a GPU: the CPU backend's peak, which the
    /// device peak does not include.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_offload_peak_bytes: Option<u64>,
    /// GPU backend only: per-step host record/submit time against device time.
    #[serde(skip_serializing_if = "Option::is_none")]
    overhead: Option<overhead::OverheadReport>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

pub fn run(args: &SdBenchArgs, device: &Device) -> Result<()> {
    let path = match &args.model {
        Some(p) => p.clone(),
        None => crate::generate::bundled_model()?,
    };
    let weight_type: WeightType = args.weight_type.parse()?;
    let budget = parse_max_vram(args.max_vram.as_deref())?;
    let offload = Offload {
        vae_on_cpu: args.vae_on_cpu,
        text_encoder_on_cpu: args.text_encoder_on_cpu,
    };
    let offloaded = !device.is_cpu() && (offload.vae_on_cpu || offload.text_encoder_on_cpu);
    let options = LoadOptions {
        offload,
        ..LoadOptions::weight_type(weight_type)
    };
    let sampler = SamplerSpec::parse(&args.sampler)?;
    let params_for = |model: &StableDiffusion| run_params(args, sampler, model.default_size());
    let may_tile = !args.vae_tiling;
    let prepared = prepare_with(&path, device, options, budget, may_tile, params_for)?;
    if let Some(line) = prepared.describe() {
        eprintln!("{line}");
    }
    device.reset_peak_memory();
    Device::Cpu.reset_peak_memory();
    let start = Instant::now();
    let model = prepared
        .load(&path, device)
        .with_context(|| format!("loading {}", path.display()))?;
    device.synchronize()?;
    let load_ms = ms(start);
    let weight_bytes = device.memory_stats().live;
    let mut params = params_for(&model)?;
    prepared.apply(&mut params);
    let options = &prepared.options;

    // Text encoding timed on its own (generate runs the same call first, so the warm-up also makes
    // the pipelines of the text encoder compiled before the timed run).
    let guidance = params.cfg_scale > 1.0;
    let negative = guidance.then_some(params.negative_prompt.as_str());
    encode_pair(
        &model,
        &params.prompt,
        negative,
        params.clip_skip,
        params.embeddings.as_deref(),
    )?;
    device.synchronize()?;
    let t = Instant::now();
    encode_pair(
        &model,
        &params.prompt,
        negative,
        params.clip_skip,
        params.embeddings.as_deref(),
    )?;
    device.synchronize()?;
    let text_encoding_ms = ms(t);

    let run_start = Instant::now();
    let mut marks = Vec::with_capacity(params.steps);
    let mut recorder = overhead::Recorder::start(device)?;
    generate(&model, &params, &mut |_| {
        marks.push(Instant::now());
        if let Some(r) = recorder.as_mut() {
            r.mark();
        }
    })?;
    device.synchronize()?;
    let overhead = recorder.map(overhead::Recorder::finish).transpose()?;
    let end = Instant::now();
    let total_ms = ms(run_start);

    let mut step_ms = Vec::with_capacity(marks.len());
    let mut previous = run_start;
    for (i, &mark) in marks.iter().enumerate() {
        let mut d = (mark - previous).as_secs_f64() * 1e3;
        if i == 0 {
            d = (d - text_encoding_ms).max(0.0);
        }
        step_ms.push(d);
        previous = mark;
    }
    let vae_decode_ms = (end - previous).as_secs_f64() * 1e3;
    let mean_step_ms = step_ms.iter().sum::<f64>() / step_ms.len().max(1) as f64;
    let stats = device.memory_stats();
    let report = SdReport {
        tool: "kiln",
        version: env!("CARGO_PKG_VERSION"),
        device: device.name(),
        model: path.display().to_string(),
        dtype: options.dtype.to_string(),
        weight_type: weight_type.to_string(),
        vae_tiling: params.vae_tiling.map(|t| t.tile),
        max_vram_bytes: budget,
        unet_streamed: options.stream_unet,
        width: params.width,
        height: params.height,
        steps: params.steps,
        cfg_scale: params.cfg_scale,
        load_ms,
        text_encoding_ms,
        mean_step_ms,
        its_per_second: 1e3 / mean_step_ms,
        step_ms,
        vae_decode_ms,
        total_ms,
        peak_memory_bytes: stats.peak_live,
        peak_reserved_bytes: stats.peak_reserved,
        weight_bytes,
        cpu_offload_peak_bytes: offloaded.then(|| Device::Cpu.memory_stats().peak_live),
        overhead,
    };
    print_table(&report);
    if let Some(path) = &args.json {
        let tmp = path.with_extension("json.partial");
        std::fs::write(&tmp, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run_params(
    args: &SdBenchArgs,
    sampler: SamplerSpec,
    default_size: usize,
) -> Result<GenerationParams> {
    let mut params = GenerationParams::new(args.prompt.clone());
    params.width = args.width.unwrap_or(default_size);
    params.height = args.height.unwrap_or(default_size);
    params.steps = args.steps;
    params.cfg_scale = args.cfg_scale;
    params.sampler = sampler;
    params.vae_tiling = args
        .vae_tiling
        .then(|| VaeTiling::new(args.vae_tile_size, args.vae_tile_overlap))
        .transpose()?;
    Ok(params)
}

fn print_table(r: &SdReport) {
    println!("device: {}", r.device);
    println!(
        "model:  {} ({} weights, {} compute, {}x{}, {} steps, CFG {}{}{})",
        r.model,
        r.weight_type,
        r.dtype,
        r.width,
        r.height,
        r.steps,
        r.cfg_scale,
        r.vae_tiling
            .map(|t| format!(", VAE in {t}-latent tiles"))
            .unwrap_or_default(),
        if r.unet_streamed {
            ", UNet streamed"
        } else {
            ""
        }
    );
    println!("{:<26} {:>10}", "stage", "ms");
    println!("{:<26} {:>10.1}", "load", r.load_ms);
    println!("{:<26} {:>10.1}", "text encoding", r.text_encoding_ms);
    for (i, s) in r.step_ms.iter().enumerate() {
        println!("{:<26} {:>10.1}", format!("unet step {}", i + 1), s);
    }
    println!("{:<26} {:>10.1}", "vae decode", r.vae_decode_ms);
    println!("{:<26} {:>10.1}", "total (text+steps+decode)", r.total_ms);
    println!(
        "{:.2} it/s (mean step {:.1} ms)",
        r.its_per_second, r.mean_step_ms
    );
    println!(
        "peak memory: {} in tensors ({} weights), {} reserved",
        format_bytes(r.peak_memory_bytes),
        format_bytes(r.weight_bytes),
        format_bytes(r.peak_reserved_bytes)
    );
    if let Some(cpu) = r.cpu_offload_peak_bytes {
        println!(
            "peak CPU-backend memory (offloaded parts): {}",
            format_bytes(cpu)
        );
    }
    if let Some(o) = &r.overhead {
        overhead::print(o);
    }
}
