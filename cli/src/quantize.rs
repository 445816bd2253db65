//! `kiln quantize`: writes a model with its layer weights packed that loads back directly, with no
//! quantising at load: a folder (or single file) of packed safetensors (q8_0, q4_0, nf4), or, for
//! LLM folders, a llama.cpp GGUF file (q4_k_m, q6_k, q8_0).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kiln_llm::gguf_export::policy::GgufMix;
use kiln_llm::gguf_export::quantize_to_gguf;
use kiln_llm::model::is_gguf;
use kiln_models::pipeline::quantize_model;
use kiln_runtime::memory::format_bytes;
use kiln_runtime::QuantFormat;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Model: a diffusers folder or an LLM folder (config.json + safetensors, sharded or not),
    /// each written as a folder, or a single-file SD .safetensors (written as one file).
    #[arg(short = 'm', long)]
    model: PathBuf,

    /// Output path; must not exist. For an LLM folder, a path ending in .gguf (or --type q4_k_m /
    /// q6_k) writes one llama.cpp GGUF file.
    #[arg(short = 'o', long)]
    output: PathBuf,

    /// Block format: q8_0, q4_0 (ggml) or nf4 (bitsandbytes) for folder outputs; q4_k_m, q6_k or
    /// q8_0 for GGUF outputs of LLM folders, typed per tensor as llama.cpp's llama-quantize does
    /// (no importance matrix) and packed bit-identically to it. q4_k_m: Q4_K, with attn_v and
    /// ffn_down Q6_K on the first and last eighth of the layers and every third layer between,
    /// the output head (or the tied embedding) Q6_K; q6_k: all Q6_K; q8_0: all Q8_0. Norms stay
    /// F32; rows that are not whole 256-weight blocks fall back to Q5_0 (for Q4_K) or Q8_0 (for
    /// Q6_K), and to F16 when not whole 32-weight blocks either.
    #[arg(long = "type")]
    format: String,
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    let is_llm =
        args.model.join("config.json").is_file() && !args.model.join("model_index.json").is_file();
    let mix = GgufMix::parse(&args.format);
    let to_gguf = is_gguf(&args.output) || matches!(mix, Some(GgufMix::Q4KM | GgufMix::Q6K));
    if to_gguf {
        let Some(mix) = mix else {
            anyhow::bail!(
                "--type {}: a GGUF output is written as one of {}",
                args.format,
                GgufMix::NAMES.join(", ")
            );
        };
        if !is_llm {
            anyhow::bail!(
                "--type {} (a GGUF output) needs an LLM folder (config.json + safetensors); {} is not one",
                mix.name(),
                args.model.display()
            );
        }
        let report = quantize_to_gguf(&args.model, &args.output, mix)?;
        let mut counts: Vec<(String, usize)> = Vec::new();
        for (_, ty) in &report.tensors {
            match counts.iter_mut().find(|(n, _)| *n == ty.name()) {
                Some((_, c)) => *c += 1,
                None => counts.push((ty.name(), 1)),
            }
        }
        let counts: Vec<String> = counts.iter().map(|(n, c)| format!("{c} {n}")).collect();
        eprintln!(
            "{}: GGUF {}, {} tensors ({}); {} of f32 weights -> {}",
            args.output.display(),
            mix.name(),
            report.tensors.len(),
            counts.join(", "),
            format_bytes(report.bytes_in),
            format_bytes(report.bytes_out)
        );
        return Ok(());
    }
    let format: QuantFormat = args.format.parse()?;
    if !format.packable() {
        anyhow::bail!(
            "--type {format}: kiln reads {format} weights from GGUF files but packs only q8_0, q4_0 and nf4 \
             into folders (q4_k_m, q6_k and q8_0 write GGUF files of LLM folders)"
        );
    }
    let report = if is_llm {
        kiln_llm::quantize::quantize_folder(&args.model, &args.output, format)?
    } else {
        quantize_model(&args.model, &args.output, format)?
    };
    eprintln!(
        "{}: {} tensors packed as {format}, {} copied; tensor data {} -> {}",
        args.output.display(),
        report.packed,
        report.copied,
        format_bytes(report.bytes_in),
        format_bytes(report.bytes_out)
    );
    Ok(())
}
