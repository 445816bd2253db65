//! `kiln generate`: txt2img, img2img and inpainting to PNG files carrying A1111's infotext.
//!
//! Everything the user typed is checked before the model loads, and the PNGs are written only
//! once every image exists: each goes to a temporary file in the output folder and is renamed into
//! place, so an error leaves no output file behind (and no half-written one).

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::control::{
    load_controls, parse_control_mode, parse_control_resize, read_controls, UnitSettings,
};
use crate::hires::HiresArgs;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use kiln_models::embeddings::EmbeddingDb;
use kiln_models::image::infotext::PNG_KEYWORD;
use kiln_models::image::png::encode_png;
use kiln_models::image::{read_image, RgbImage};
use kiln_models::lora::{parse_cli_lora, prompt_tags, ActiveLora, LoraFile, LoraLibrary};
use kiln_models::pipeline::{
    add_refiner, add_vae, check_refiner_switch, generate, infotext, open_refiner, plan_with,
    prepare_with, short_hash, ControlMode, GenerationParams, InitImage, LoadOptions, Offload,
    Outpaint, Refiner, StableDiffusion,
};
use kiln_models::rng::RngKind;
use kiln_models::schedulers::{parse_schedule, SamplerSpec};
use kiln_models::vae::VaeTiling;
use kiln_nn::weights::WeightType;
use kiln_runtime::memory::{format_bytes, parse_bytes, MemoryStats};
use kiln_runtime::Device;

use crate::generate_xyz;

/// Where the bundled default model lives in a checkout, relative to the workspace root.
const BUNDLED_MODEL: &str = "models/bundled";

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model: a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    /// scheduler/) or a single-file .safetensors checkpoint (SD 1.x/2.x original layout).
    /// Default: the bundled tiny model.
    #[arg(short = 'm', long)]
    model: Option<PathBuf>,

    /// The prompt, in A1111 syntax: (word:1.3), (word), [word], \( escapes, BREAK.
    #[arg(short = 'p', long)]
    prompt: String,

    /// What to steer away from (used when --cfg-scale > 1).
    #[arg(short = 'n', long = "negative-prompt", default_value = "")]
    negative: String,

    /// Denoising steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,

    /// Classifier-free guidance scale; 1 or less skips the negative prompt's pass.
    #[arg(long, default_value_t = 7.0)]
    cfg_scale: f32,

    /// Image width in pixels (a multiple of 8). Default: the init image's, else the model's.
    #[arg(short = 'W', long)]
    width: Option<usize>,

    /// Image height in pixels (a multiple of 8). Default: the init image's, else the model's.
    #[arg(short = 'H', long)]
    height: Option<usize>,

    /// Seed of the first image (the next ones get seed+1, ...); -1 picks one at random.
    #[arg(short = 's', long, default_value = "-1", allow_negative_numbers = true)]
    seed: String,

    /// Sampler, as A1111 or stable-diffusion.cpp names it: Euler, "Euler a", Heun, DPM2, DDIM,
    /// DDPM, "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE", UniPC, LCM, euler_a, heun, dpm2, dpm++2m,
    /// dpm++2m_sde, ... ("DPM++ 2M Karras" or "DPM++ 2M Exponential" also sets the schedule).
    #[arg(long, default_value = "Euler")]
    sampler: String,

    /// Sigma schedule (A1111's "Schedule type"): automatic, karras, exponential or sgm_uniform
    /// (each where the sampler's diffusers class has it).
    #[arg(long)]
    schedule: Option<String>,

    /// Images per batch (denoised together).
    #[arg(short = 'b', long = "batch-size", default_value_t = 1)]
    batch_size: usize,

    /// Batches to run one after another.
    #[arg(long, default_value_t = 1)]
    batch_count: usize,

    /// Init image for img2img (PNG, JPEG, BMP or WebP).
    #[arg(short = 'i', long = "init")]
    init: Option<PathBuf>,

    /// img2img denoising strength in (0, 1]. Default 0.75, or 1 with a mask (diffusers' defaults).
    #[arg(long)]
    strength: Option<f64>,

    /// Inpainting mask: white repaints, black keeps. Needs --init.
    #[arg(long)]
    mask: Option<PathBuf>,

    /// Folder of textual-inversion embeddings (.safetensors, searched recursively): a file's
    /// name used as a word of the prompt or negative prompt stands for its vectors (A1111's
    /// embeddings folder).
    #[arg(long, value_name = "DIR")]
    embeddings_dir: Option<PathBuf>,

    /// Use the text encoder's N-th layer from the end (A1111's "Clip skip"; 1 = the last).
    #[arg(long, default_value_t = 1)]
    clip_skip: usize,

    /// Noise source: cpu (PyTorch's CPU generator, as diffusers; the default), cpu-portable
    /// (the same on non-AVX2 machines), or philox (A1111's GPU/NV noise).
    #[arg(long, default_value = "cpu")]
    rng: String,

    /// Output PNG. With several images: NAME-1.png, NAME-2.png, ...
    #[arg(short = 'o', long, default_value = "output.png")]
    output: PathBuf,

    /// Weight storage: f32, f16, or quantised at load: q8_0, q4_0 (ggml blocks) or nf4
    /// (bitsandbytes). Quantised types pack Linear and convolution weights whose rows are whole
    /// blocks; the rest (norms, biases, embeddings, conv_in) stays f32.
    #[arg(long, default_value = "f32")]
    weight_type: String,

    /// Print the peak device memory this run would need (weights per component, activations per
    /// phase, with and without UNet weight streaming) and exit without generating.
    #[arg(long)]
    plan: bool,

    /// Keep peak device memory under SIZE (e.g. 1.5G, 800M; K/M/G/T are powers of 1024): freed
    /// buffers are given back when over it; when the run would not fit, the VAE runs in smaller
    /// tiles (unless a tiling flag is given) and then the UNet's weights stream from host memory
    /// layer by layer. Fails before starting, with the smallest budget, when even that cannot.
    #[arg(long, value_name = "SIZE")]
    max_vram: Option<String>,

    /// Decode (and for img2img / inpainting, encode) with the VAE in overlapping tiles, one at a
    /// time, so its memory is bounded by one tile. On by itself above 1024x1024 pixels.
    #[arg(long)]
    vae_tiling: bool,

    /// Never tile the VAE, even above 1024x1024 pixels.
    #[arg(long, conflicts_with = "vae_tiling")]
    no_vae_tiling: bool,

    /// VAE tile size in latent pixels (8 image pixels each for SD).
    #[arg(long, default_value_t = VaeTiling::default().tile)]
    vae_tile_size: usize,

    /// Overlap of neighbouring VAE tiles in latent pixels (at most half the tile size); the tiles
    /// are blended linearly across it.
    #[arg(long, default_value_t = VaeTiling::default().overlap)]
    vae_tile_overlap: usize,

    /// Load and run the VAE on the CPU backend (the UNet stays on --device).
    #[arg(long)]
    vae_on_cpu: bool,

    /// A VAE .safetensors that replaces the model's own (A1111's --vae-path, stable-diffusion.cpp's
    /// --vae): diffusers' layout, or the original layout bare (`encoder.down.*`, as the sdxl-vae
    /// and vae-ft-mse single files are) or under `first_stage_model.`. Its sizes come from its
    /// shapes, the latent scaling from the model's own VAE config.
    #[arg(long, value_name = "FILE")]
    vae: Option<PathBuf>,

    /// Load and run the text encoder (SDXL: both) on the CPU backend (the UNet stays on --device).
    #[arg(long)]
    text_encoder_on_cpu: bool,

    /// A LoRA file and its weight for the UNet and the text encoder (repeatable).
    #[arg(long = "lora", value_name = "FILE[:WEIGHT]")]
    lora: Vec<String>,

    /// The folder the prompts' A1111 tags `<lora:NAME:WEIGHT>` (or `<lora:NAME:TE:UNET>`) find
    /// NAME.safetensors in; the tags are removed from the text.
    #[arg(long = "lora-dir", value_name = "DIR")]
    lora_dir: Option<PathBuf>,

    #[command(flatten)]
    hires: HiresArgs,

    /// Outpainting: extend the init image (-i) by LEFT,TOP,RIGHT,BOTTOM pixels; the new border
    /// (and a --outpaint-blur band inside the old edge) is inpainted and the seam blended.
    #[arg(long, value_name = "L,T,R,B")]
    outpaint: Option<String>,

    /// Width in pixels of the band inside the old edge that outpainting redraws and blends.
    #[arg(long, default_value_t = 8)]
    outpaint_blur: usize,

    /// An X/Y/Z plot axis, A1111's script: TYPE=VALUES, the first X, the second Y, the third
    /// Z. TYPE: seed, steps, cfg, sampler, prompt (Prompt S/R: the first value is searched for
    /// and each value replaces it), denoising, checkpoint (a model path per value), clip-skip,
    /// or an A1111 axis label. VALUES: a comma list ("quoted, with commas"), and for numbers
    /// ranges 1-5, 1-5 (+2), 1-10 [5]. Writes the labelled grid to -o and each image beside it
    /// (OUT-0001.png, ...).
    #[arg(long = "xyz", value_name = "TYPE=VALUES")]
    xyz: Vec<String>,

    /// The largest X/Y/Z grid, in pixels (labels included); a larger one is refused before
    /// anything is generated. Default: A1111's 200 megapixels.
    #[arg(long, default_value_t = 200_000_000)]
    max_pixels: usize,

    /// An SDXL refiner (diffusers folder or single file) that samples the last steps on the main
    /// model's latents, as A1111's "Refiner" does; loaded with the same --weight-type, --vae and
    /// offload flags.
    #[arg(long, value_name = "MODEL")]
    refiner: Option<PathBuf>,

    /// The fraction of the steps the main model runs before the refiner takes over (A1111's
    /// "Switch at"), between 0 and 1.
    #[arg(long = "refiner-switch", value_name = "FRACTION")]
    refiner_switch: Option<f64>,
    /// A ControlNet (diffusers folder or original single file), its control image and weight
    /// (default 1); repeatable, the units' residuals are summed.
    #[arg(long = "control", value_name = "MODEL:IMAGE[:WEIGHT]")]
    control: Vec<String>,

    /// The preprocessor making each --control's image into a control image (one per --control,
    /// in order; default none: the image already is one).
    #[arg(long = "control-pre", value_name = "NAME")]
    control_pre: Vec<String>,

    /// The fraction of the steps where the ControlNets start acting.
    #[arg(long = "control-start", default_value_t = 0.0)]
    control_start: f32,

    /// The fraction of the steps after which the ControlNets stop acting.
    #[arg(long = "control-end", default_value_t = 1.0)]
    control_end: f32,

    /// The A1111 ControlNet extension's control mode for every --control: balanced, prompt ("My
    /// prompt is more important": residuals weakened towards the fine skips) or controlnet
    /// ("ControlNet is more important": that, and only for the prompt's half of guidance).
    #[arg(long = "control-mode", value_name = "MODE", default_value = "balanced")]
    control_mode: String,

    /// How each control image is fitted to the output size (the extension's resize mode): just
    /// (stretch), crop (cover and crop the centre) or fill (fit inside, border colour around).
    #[arg(long = "control-resize", value_name = "MODE", default_value = "crop")]
    control_resize: String,

    /// The preprocessors' resolution (the extension's processor_res): the image's short side
    /// before canny, threshold or scribble_xdog runs (64 to 2048; default 512).
    #[arg(long = "control-res", value_name = "N")]
    control_res: Option<u32>,

    /// diffusers' ControlNet guess mode: residuals only for the prompt's half of
    /// classifier-free guidance, scaled from 0.1 to 1 along the down path.
    #[arg(long, conflicts_with = "control_mode")]
    guess_mode: bool,
}

/// A1111's default "Switch at".
const DEFAULT_REFINER_SWITCH: f64 = 0.8;

/// Images with more pixels than this get a tiled VAE unless --no-vae-tiling: an SD VAE decode of
/// a whole 1024x1024 image already holds about 3 GiB of f32 activations.
const AUTO_TILING_PIXELS: usize = 1024 * 1024;

/// `report_memory`: print the peak memory report even when stderr is not a terminal (the global
/// `--report-memory`); on a terminal it is always printed.
pub fn run(args: &GenerateArgs, device: &Device, report_memory: bool) -> Result<()> {
    // Everything the user typed is checked before the (slow) model load.
    let mut sampler = SamplerSpec::parse(&args.sampler)?;
    if let Some(schedule) = &args.schedule {
        sampler = sampler.with_schedule(parse_schedule(schedule)?)?;
    }
    let rng: RngKind = args.rng.parse()?;
    let weight_type: WeightType = args.weight_type.parse()?;
    let seed = parse_seed(&args.seed)?;
    let plot = generate_xyz::parse_axes(&args.xyz)?;
    if plot.is_some() && (args.batch_size != 1 || args.batch_count != 1) {
        bail!("--xyz makes one image per cell: leave -b / --batch-count at 1");
    }
    for (name, value) in [("width", args.width), ("height", args.height)] {
        if let Some(v) = value {
            if v == 0 || !v.is_multiple_of(8) {
                bail!("{name} {v} is not a positive multiple of 8");
            }
        }
    }
    if args.mask.is_some() && args.init.is_none() {
        bail!("--mask needs an init image (--init)");
    }
    if args.strength.is_some() && args.init.is_none() {
        bail!("--strength applies to img2img: give an init image (--init)");
    }
    if args.hires.requested()?.is_some() && args.init.is_some() {
        bail!("hires fix (--hr-scale / --hr-resize) is for txt2img: it cannot take --init");
    }
    let tiling = VaeTiling::new(args.vae_tile_size, args.vae_tile_overlap)
        .map_err(|e| anyhow!("--vae-tile-size / --vae-tile-overlap: {e}"))?;
    let (init, outpaint) = match &args.outpaint {
        None => (read_init(args)?, None),
        Some(sides) => {
            let (init, canvas) = read_outpaint(args, sides)?;
            (Some(init), Some(canvas))
        }
    };
    let embeddings = read_embeddings(args.embeddings_dir.as_deref())?;
    let loras = read_loras(args)?;
    let refiner_switch = args.refiner_switch.unwrap_or(DEFAULT_REFINER_SWITCH);
    match &args.refiner {
        None if args.refiner_switch.is_some() => {
            bail!("--refiner-switch needs a refiner model (--refiner)")
        }
        None => {}
        Some(path) => {
            if !path.exists() {
                bail!("--refiner {}: no such file or folder", path.display());
            }
            check_refiner_switch(refiner_switch).map_err(|e| anyhow!("--refiner-switch: {e}"))?;
        }
    }
    let controls = read_controls(&args.control, &args.control_pre, args.control_res)?;
    let window = (args.control_start, args.control_end);
    if !(0.0..=1.0).contains(&window.0) || !(0.0..=1.0).contains(&window.1) || window.0 > window.1 {
        bail!(
            "--control-start {} and --control-end {} must satisfy 0 <= start <= end <= 1",
            window.0,
            window.1
        );
    }
    let unit_settings = UnitSettings {
        window,
        mode: if args.guess_mode {
            ControlMode::DiffusersGuess
        } else {
            parse_control_mode(&args.control_mode)?
        },
        resize: parse_control_resize(&args.control_resize)?,
    };
    check_output_folder(&args.output)?;

    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => bundled_model()?,
    };
    let budget = parse_max_vram(args.max_vram.as_deref())?;
    let offload = Offload {
        vae_on_cpu: args.vae_on_cpu,
        text_encoder_on_cpu: args.text_encoder_on_cpu,
    };
    if let Some(vae) = &args.vae {
        if !vae.is_file() {
            bail!("--vae {}: no such file", vae.display());
        }
    }
    let options = LoadOptions {
        offload,
        vae: args.vae.clone(),
        ..LoadOptions::weight_type(weight_type)
    };
    // The run's parameters for a model (the plan's zero-weight one or the real one): the size
    // defaults come from its configs.
    // ControlNets and the refiner load for each such model too: zeros tallied for the plan, so
    // the plan and the --max-vram fit count them; the real ones on the model's device as its
    // UNet loaded (streamed when it streams).
    let refiner_options = options.clone();
    let for_model = |model: &StableDiffusion, params: &mut GenerationParams| -> Result<()> {
        params.controls = load_controls(&controls, model, weight_type, unit_settings)?;
        params.refiner = match &args.refiner {
            Some(path) => Some(Refiner {
                model: Arc::new(
                    open_refiner(path, model, device, &refiner_options)
                        .with_context(|| format!("--refiner {}", path.display()))?,
                ),
                switch_at: refiner_switch,
            }),
            None => None,
        };
        Ok(())
    };
    let params_for = |model: &StableDiffusion| -> Result<GenerationParams> {
        let size = size(args, init.as_ref(), model)?;
        let mut params = params(args, sampler, rng, seed, init.clone(), size, tiling);
        params.embeddings = embeddings.clone();
        params.loras = loras.clone();
        params.hires = args.hires.hires(size, model.size_multiple())?;
        if let Some(h) = &params.hires {
            // Tiling is decided by the largest image the VAE sees: the second pass's.
            params.vae_tiling = vae_tiling(args, tiling, h.width, h.height);
        }
        for_model(model, &mut params)?;
        Ok(params)
    };
    if args.plan {
        print!(
            "{}",
            plan_with(&model_path, device, &options, params_for)?.report()
        );
        return Ok(());
    }
    let may_tile = !args.vae_tiling && !args.no_vae_tiling;
    let loader = generate_xyz::Loader {
        device,
        options: options.clone(),
        budget,
        may_tile,
        for_model: &for_model,
    };
    let prepared = prepare_with(&model_path, device, options, budget, may_tile, params_for)?;
    if let Some(line) = prepared.describe() {
        eprintln!("{line}");
    }
    device.reset_peak_memory();
    let model = prepared.load(&model_path, device)?;
    device.synchronize()?;
    let weight_bytes = device.memory_stats().live;
    let mut params = params_for(&model)?;
    prepared.apply(&mut params);
    let refiner = match &params.refiner {
        Some(r) => Some(short_hash(&r.model.source.hash_file)?),
        None => None,
    };
    let (width, height) = (params.width, params.height);
    if let Some(note) = single_tile_note(params.vae_tiling, width, height, model.vae_scale_factor())
    {
        eprintln!("{note}");
    }

    if let Some(plot) = &plot {
        generate_xyz::run(plot, model, &params, loader, &args.output, args.max_pixels)?;
        if report_memory || std::io::stderr().is_terminal() {
            eprintln!("{}", memory_report(device, weight_bytes, offload));
        }
        return Ok(());
    }

    let hash = short_hash(&model.source.hash_file)?;
    let vae = match &model.source.vae {
        Some(file) => Some((file_name(file), short_hash(file)?)),
        None => None,
    };
    let bar = progress_bar();
    let images = generate(&model, &params, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.step as u64);
    });
    bar.finish_and_clear();
    let images = images?;

    let paths = output_paths(&args.output, images.len());
    let mut files = Vec::with_capacity(images.len());
    for (image, path) in images.iter().zip(&paths) {
        let mut info = infotext(&params, image.seed, &model.source.name, Some(&hash));
        if let Some((name, hash)) = &vae {
            add_vae(&mut info, name, Some(hash));
        }
        if let (Some(r), Some(hash)) = (&params.refiner, &refiner) {
            add_refiner(&mut info, &r.model.source.name, hash, r.switch_at);
        }
        let info = info.format();
        let mut rgb = image.to_rgb8();
        if let Some((o, original, x, y)) = &outpaint {
            rgb = o.blend_seam(&rgb, original, *x, *y);
        }
        let png = encode_png(&rgb, &[(PNG_KEYWORD, &info)])?;
        files.push((path.clone(), png));
    }
    write_all_or_nothing(&files)?;
    for (path, _) in &files {
        println!("{}", path.display());
    }
    if report_memory || std::io::stderr().is_terminal() {
        eprintln!("{}", memory_report(device, weight_bytes, offload));
    }
    Ok(())
}

/// `--lora` files and the files the prompts' tags name in `--lora-dir`, read (and their names
/// checked) before the model loads.
fn read_loras(args: &GenerateArgs) -> Result<Vec<ActiveLora>> {
    let mut loras = Vec::new();
    for arg in &args.lora {
        let (file, weight) = parse_cli_lora(arg)?;
        let file = LoraFile::open(Path::new(&file)).with_context(|| format!("--lora {arg}"))?;
        loras.push(ActiveLora {
            file: Arc::new(file),
            te_weight: weight,
            unet_weight: weight,
        });
    }
    match &args.lora_dir {
        Some(dir) => loras.extend(LoraLibrary::new(dir)?.resolve(&args.prompt, &args.negative)?),
        None => {
            if let Some(tag) = prompt_tags(&args.prompt, &args.negative)?.first() {
                bail!(
                    "the prompt names LoRA `{}`: give --lora-dir DIR with {}.safetensors in it",
                    tag.name,
                    tag.name
                );
            }
        }
    }
    Ok(loras)
}

fn params(
    args: &GenerateArgs,
    sampler: SamplerSpec,
    rng: RngKind,
    seed: u64,
    init: Option<InitImage>,
    (width, height): (usize, usize),
    tiling: VaeTiling,
) -> GenerationParams {
    let mut params = GenerationParams::new(args.prompt.clone());
    params.negative_prompt = args.negative.clone();
    params.steps = args.steps;
    params.cfg_scale = args.cfg_scale;
    params.width = width;
    params.height = height;
    params.seed = seed;
    params.sampler = sampler;
    params.batch_size = args.batch_size;
    params.batch_count = args.batch_count;
    params.clip_skip = args.clip_skip;
    params.rng = rng;
    params.init = init;
    params.vae_tiling = vae_tiling(args, tiling, width, height);
    params
}

/// `--embeddings-dir`: every embedding of the folder; files it cannot read are named on stderr
/// and left out (as A1111 does), a folder it cannot read is an error.
pub fn read_embeddings(dir: Option<&Path>) -> Result<Option<Arc<EmbeddingDb>>> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let db = EmbeddingDb::load_dir(dir).context("--embeddings-dir")?;
    for (path, why) in &db.skipped {
        eprintln!("skipping embedding {}: {why}", path.display());
    }
    Ok(Some(Arc::new(db)))
}

/// --vae-tiling, or automatically above `AUTO_TILING_PIXELS` unless --no-vae-tiling.
fn vae_tiling(
    args: &GenerateArgs,
    tiling: VaeTiling,
    width: usize,
    height: usize,
) -> Option<VaeTiling> {
    let auto = width * height > AUTO_TILING_PIXELS && !args.no_vae_tiling;
    (args.vae_tiling || auto).then_some(tiling)
}

/// `--max-vram SIZE` (generate, bench sd, serve): bytes, with K/M/G/T as powers of 1024.
pub fn parse_max_vram(size: Option<&str>) -> Result<Option<u64>> {
    size.map(parse_bytes).transpose().context("--max-vram")
}

/// A warning when tiling was asked for but the image fits one tile, so the VAE runs whole (at
/// 512x512 the default 64-latent tile does not split anything).
fn single_tile_note(
    tiling: Option<VaeTiling>,
    width: usize,
    height: usize,
    scale: usize,
) -> Option<String> {
    let t = tiling?;
    (!t.splits(height / scale, width / scale)).then(|| {
        format!(
            "note: a {width}x{height} image fits one VAE tile of {} latent pixels ({} px), so              the VAE runs whole; a smaller --vae-tile-size (e.g. {}) splits it",
            t.tile,
            t.tile * scale,
            (t.tile / 2).max(2)
        )
    })
}

/// "peak device memory: X (weights Y, activations Z)" for the run's device, and the CPU backend's
/// peak on its own line when components ran there while the UNet used a GPU.
fn memory_report(device: &Device, weight_bytes: u64, offload: Offload) -> String {
    let split = |stats: MemoryStats, weights: u64| {
        format!(
            "{} (weights {}, activations {})",
            format_bytes(stats.peak_live),
            format_bytes(weights),
            format_bytes(stats.peak_live.saturating_sub(weights))
        )
    };
    let mut text = format!(
        "peak device memory: {}",
        split(device.memory_stats(), weight_bytes)
    );
    if !device.is_cpu() && (offload.vae_on_cpu || offload.text_encoder_on_cpu) {
        let parts: Vec<&str> = [
            (offload.text_encoder_on_cpu, "text encoder"),
            (offload.vae_on_cpu, "VAE"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        let cpu = Device::Cpu.memory_stats();
        text.push_str(&format!(
            "\npeak CPU-backend memory ({}): {}",
            parts.join(", "),
            format_bytes(cpu.peak_live)
        ));
    }
    text
}

fn parse_seed(text: &str) -> Result<u64> {
    let text = text.trim();
    if text == "-1" {
        return Ok(random_seed());
    }
    text.parse::<u64>()
        .map_err(|_| anyhow!("seed {text:?} is not -1 (random) or a whole number >= 0"))
}

/// A seed in A1111's range (below 2^32), from the standard library's per-process random keys.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() & 0xffff_ffff
}

fn read_init(args: &GenerateArgs) -> Result<Option<InitImage>> {
    let Some(path) = &args.init else {
        return Ok(None);
    };
    let image = read_image(path)?;
    let mask = match &args.mask {
        Some(m) => Some(read_image(m)?.to_gray()),
        None => None,
    };
    let strength = args
        .strength
        .unwrap_or(if mask.is_some() { 1.0 } else { 0.75 });
    if !(strength > 0.0 && strength <= 1.0) {
        bail!("--strength {strength} must be in (0, 1]");
    }
    Ok(Some(InitImage {
        image,
        mask,
        strength,
    }))
}

/// `--outpaint`: the init image on its larger canvas with the border masked, and what the seam
/// blend needs afterwards (the sides, the original, its place on the canvas).
fn read_outpaint(
    args: &GenerateArgs,
    sides: &str,
) -> Result<(InitImage, (Outpaint, RgbImage, usize, usize))> {
    let Some(path) = &args.init else {
        bail!("--outpaint extends an image: give it with -i");
    };
    if args.mask.is_some() {
        bail!("--outpaint makes its own mask: leave out --mask");
    }
    if args.width.is_some() || args.height.is_some() {
        bail!("--outpaint sets the size (the image plus its borders): leave out -W / -H");
    }
    let o = Outpaint::parse(sides, args.outpaint_blur).context("--outpaint")?;
    let original = read_image(path)?;
    let canvas = o.canvas(&original, 8)?;
    let strength = args.strength.unwrap_or(1.0);
    if !(strength > 0.0 && strength <= 1.0) {
        bail!("--strength {strength} must be in (0, 1]");
    }
    let init = InitImage {
        image: canvas.image,
        mask: Some(canvas.mask),
        strength,
    };
    Ok((init, (o, original, canvas.x, canvas.y)))
}

/// -W/-H, else the init image's size rounded down to the model's multiple, else the model's
/// default (diffusers' rules).
fn size(
    args: &GenerateArgs,
    init: Option<&InitImage>,
    model: &StableDiffusion,
) -> Result<(usize, usize)> {
    let m = model.size_multiple();
    let default = |given: Option<usize>, from_init: Option<usize>| match (given, from_init) {
        (Some(v), _) => v,
        (None, Some(v)) => (v / m * m).max(m),
        (None, None) => model.default_size(),
    };
    let width = default(args.width, init.map(|i| i.image.width));
    let height = default(args.height, init.map(|i| i.image.height));
    if !width.is_multiple_of(m) || !height.is_multiple_of(m) {
        bail!("width and height must be multiples of {m} for this model, got {width}x{height}");
    }
    Ok((width, height))
}

/// The bundled tiny model of this checkout, used when `-m` is omitted.
pub fn bundled_model() -> Result<PathBuf> {
    let cli_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = cli_dir.parent().unwrap_or(cli_dir).join(BUNDLED_MODEL);
    if path.join("model_index.json").is_file() {
        return Ok(path);
    }
    bail!(
        "no model given (-m) and the bundled default model is missing ({}); pass -m with \
         a diffusers model folder or a .safetensors checkpoint",
        path.display()
    )
}

fn check_output_folder(output: &Path) -> Result<()> {
    let parent = parent_dir(output);
    if !parent.is_dir() {
        bail!(
            "output folder {} does not exist (for -o {})",
            parent.display(),
            output.display()
        );
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `out.png` for one image; `out-1.png`, `out-2.png`, ... (zero-padded to the count's width) for
/// several.
fn output_paths(output: &Path, count: usize) -> Vec<PathBuf> {
    if count == 1 {
        return vec![output.to_path_buf()];
    }
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    let digits = count.to_string().len();
    (1..=count)
        .map(|i| output.with_file_name(format!("{stem}-{i:0digits$}.{ext}")))
        .collect()
}

/// Writes every file to a temporary name beside it, then renames them all into place; on any
/// failure removes whatever it created.
pub(crate) fn write_all_or_nothing(files: &[(PathBuf, Vec<u8>)]) -> Result<()> {
    let temps: Vec<PathBuf> = files
        .iter()
        .map(|(path, _)| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            parent_dir(path).join(format!(".{name}.{}.tmp", std::process::id()))
        })
        .collect();
    let cleanup = |upto_renamed: usize| {
        for t in &temps {
            let _ = fs::remove_file(t);
        }
        for (path, _) in &files[..upto_renamed] {
            let _ = fs::remove_file(path);
        }
    };
    for ((path, bytes), temp) in files.iter().zip(&temps) {
        let written = fs::File::create(temp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        if let Err(e) = written {
            cleanup(0);
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
    }
    for (i, ((path, _), temp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = fs::rename(temp, path) {
            cleanup(i);
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
    }
    Ok(())
}

/// Steps, it/s and ETA on a terminal; nothing when stderr is not one.
pub(crate) fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{spinner} {msg} [{elapsed_precise}] {wide_bar} {pos}/{len} steps, {its}, ETA {eta}",
    )
    .map(|s| {
        s.with_key(
            "its",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.2} it/s", state.per_sec());
            },
        )
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::new(0).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A file's name with its extension, as A1111 names a VAE in infotexts.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_outputs_are_numbered() {
        assert_eq!(
            output_paths(Path::new("dir/out.png"), 1),
            vec![PathBuf::from("dir/out.png")]
        );
        let many = output_paths(Path::new("out.png"), 10);
        assert_eq!(many[0], PathBuf::from("out-01.png"));
        assert_eq!(many[9], PathBuf::from("out-10.png"));
    }

    #[test]
    fn a_tiling_that_does_not_split_the_image_is_noted() {
        let t = VaeTiling::default();
        let note = single_tile_note(Some(t), 512, 512, 8).unwrap();
        assert!(
            note.contains("64 latent pixels (512 px)") && note.contains("e.g. 32"),
            "{note}"
        );
        assert_eq!(single_tile_note(Some(t), 520, 512, 8), None);
        assert_eq!(single_tile_note(None, 512, 512, 8), None);
    }

    #[test]
    fn vae_tiling_turns_on_above_a_megapixel() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: GenerateArgs,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec!["kiln", "-p", "x"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).unwrap().args
        };
        let t = VaeTiling::default();
        let plain = parse(&[]);
        assert_eq!(vae_tiling(&plain, t, 1024, 1024), None);
        assert_eq!(vae_tiling(&plain, t, 1024, 1032), Some(t));
        assert_eq!(vae_tiling(&parse(&["--vae-tiling"]), t, 512, 512), Some(t));
        assert_eq!(
            vae_tiling(&parse(&["--no-vae-tiling"]), t, 2048, 2048),
            None
        );
        assert!(
            Cli::try_parse_from(["kiln", "-p", "x", "--vae-tiling", "--no-vae-tiling"]).is_err()
        );
    }

    #[test]
    fn seeds_parse() {
        assert_eq!(parse_seed("42").unwrap(), 42);
        assert!(parse_seed("-1").unwrap() < 1 << 32);
        assert!(parse_seed("-2").is_err());
        assert!(parse_seed("x").is_err());
    }
}
