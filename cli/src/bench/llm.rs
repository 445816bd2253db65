//! `kiln bench llm`: prefill and decode tokens/s of an LLM folder or of random weights of a real
//! config (benches/configs/), decode's effective bandwidth, and the memory the run needs (computed
//! from the shapes before loading; `--max-vram` refuses what cannot fit).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_llm::bench::WeightPlan;
use kiln_llm::bench::{estimate_memory, run, BenchPlan, LlmBenchReport, MemoryEstimate};
use kiln_llm::chat_model::plan_weights;
use kiln_llm::kv_cache::parse_kv_type;
use kiln_llm::{Mistral, MistralConfig};
use kiln_nn::weights::WeightType;
use kiln_runtime::memory::{format_bytes, parse_bytes};
use kiln_runtime::Device;

#[derive(Args, Debug)]
pub struct LlmBenchArgs {
    /// Model folder (config.json + safetensors) or llama.cpp .gguf file.
    #[arg(short = 'm', long, conflicts_with = "random")]
    model: Option<PathBuf>,

    /// A config.json to build random weights of, in memory (e.g. benches/configs/mistral-7b.json).
    #[arg(long)]
    random: Option<PathBuf>,

    /// Weight storage: f32, f16, q8_0, q4_0, nf4.
    #[arg(long, default_value = "q4_0")]
    weight_type: String,

    /// Prompt lengths to time prefill at (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [512, 4096])]
    prefill: Vec<usize>,

    /// Cache depths to time decode at (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [0, 4096, 16384])]
    depths: Vec<usize>,

    /// Tokens decoded (timed) at each depth.
    #[arg(long, default_value_t = 32)]
    decode_tokens: usize,

    /// Square image sides (pixels) to encode, for models with a vision tower: encode time and its
    /// share of the time to first token of a prompt holding the image. 0: none.
    #[arg(long, value_delimiter = ',', default_values_t = [512, 1024, 1540])]
    images: Vec<usize>,

    /// KV cache element type: f16 or f32.
    #[arg(long, default_value = "f16")]
    kv_type: String,

    /// Also estimate the memory at this context (default: what the runs need).
    #[arg(long)]
    ctx_size: Option<usize>,

    /// Refuse to run when the estimate exceeds this (e.g. 16G), naming the minimum.
    #[arg(long)]
    max_vram: Option<String>,

    /// Print the memory estimate and exit.
    #[arg(long)]
    plan: bool,

    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run_bench(args: &LlmBenchArgs, device: &Device) -> Result<()> {
    let weight_type: WeightType = args.weight_type.parse()?;
    let kv_dtype = parse_kv_type(&args.kv_type)?;
    let (config, name) = match (&args.model, &args.random) {
        (Some(m), None) => (MistralConfig::for_model(m)?, m.display().to_string()),
        (None, Some(c)) => (
            MistralConfig::from_file(c)?,
            format!("random {}", c.display()),
        ),
        _ => {
            bail!("give a model folder or GGUF file (-m) or a config for random weights (--random)")
        }
    };
    let plan = BenchPlan {
        prefill: args.prefill.clone(),
        depths: args.depths.clone(),
        decode_tokens: args.decode_tokens.max(1),
        kv_dtype: device.float_dtype(kv_dtype),
        image_sides: match &config.vision {
            Some(_) => args.images.iter().copied().filter(|&s| s > 0).collect(),
            None => Vec::new(),
        },
    };
    let chunk = plan.prefill.iter().copied().max().unwrap_or(1);
    // A GGUF file's packed weights load as stored: the estimates count them so.
    let weights = match &args.model {
        Some(m) => plan_weights(m, &config, weight_type)?,
        None => WeightPlan::uniform(&config, weight_type),
    };
    let planned = weights.weight_type;
    let memory = estimate_memory(&config, &weights, plan.context(), plan.kv_dtype, chunk);
    print_memory(&memory, plan.context());
    if let Some(ctx) = args.ctx_size {
        let at = estimate_memory(&config, &weights, ctx, plan.kv_dtype, chunk);
        eprintln!("at a {ctx}-token context: {}", format_bytes(at.total));
    }
    if let Some(budget) = &args.max_vram {
        let budget = parse_bytes(budget)?;
        if memory.total > budget {
            bail!(
                "--max-vram {}: this run needs at least {} ({} weights at {planned}, {} KV cache \
                 for {} tokens, {} activations)",
                format_bytes(budget),
                format_bytes(memory.total),
                format_bytes(memory.weights),
                format_bytes(memory.kv_cache),
                plan.context(),
                format_bytes(memory.activations)
            );
        }
    }
    if args.plan {
        return Ok(());
    }

    let start = Instant::now();
    let model = match &args.model {
        Some(dir) => Mistral::load(dir, device, weight_type)
            .with_context(|| format!("loading {}", dir.display()))?,
        None => Mistral::random(config.clone(), device, weight_type, 0x6b696c6e)?,
    };
    device.synchronize()?;
    let mut report = LlmBenchReport {
        model: name,
        device: device.name(),
        weight_type: planned.to_string(),
        kv_type: plan.kv_dtype.to_string(),
        parameters: config.parameter_count(),
        memory,
        load_seconds: start.elapsed().as_secs_f64(),
        copy_gb_per_s: 0.0,
        prefill: Vec::new(),
        decode: Vec::new(),
        images: Vec::new(),
    };
    run(&model, &plan, &mut report)?;
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_memory(m: &MemoryEstimate, context: usize) {
    eprintln!(
        "memory: {} = weights {} + KV cache {} ({context} tokens x {}) + activations {}{}",
        format_bytes(m.total),
        format_bytes(m.weights),
        format_bytes(m.kv_cache),
        format_bytes(m.kv_per_token),
        format_bytes(m.activations),
        match m.vision {
            0 => String::new(),
            v => format!(
                " + vision encoder {} (weights and one largest image)",
                format_bytes(v)
            ),
        }
    );
}

fn print_report(r: &LlmBenchReport) {
    println!(
        "{} on {}: {:.2}B parameters, {} weights, KV {}; loaded in {:.1} s; copy bandwidth {:.1} GB/s",
        r.model,
        r.device,
        r.parameters as f64 / 1e9,
        r.weight_type,
        r.kv_type,
        r.load_seconds,
        r.copy_gb_per_s
    );
    for p in &r.prefill {
        println!(
            "prefill {:>6} tokens: {:>9.2} tok/s ({:.2} s)",
            p.tokens, p.tokens_per_second, p.seconds
        );
    }
    for d in &r.decode {
        println!(
            "decode at depth {:>6}: {:>9.2} tok/s, {:.1} GB/s effective ({:.0}% of copy)",
            d.depth,
            d.tokens_per_second,
            d.effective_gb_per_s,
            100.0 * d.fraction_of_copy
        );
    }
    for i in &r.images {
        println!(
            "image {:>4}x{:<4} ({:>4} image tokens): encode {:.3} s, first token {:.3} s ({} prompt tokens), encode {:.0}% of it",
            i.side,
            i.side,
            i.image_tokens,
            i.encode_seconds,
            i.first_token_seconds,
            i.prompt_tokens,
            100.0 * i.encode_share
        );
    }
}
