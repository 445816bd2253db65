//! `kiln quantize`: writes a model with its layer weights packed (q8_0, q4_0 or nf4) that loads back
//! directly, with no quantising at load.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kiln_models::pipeline::quantize_model;
use kiln_runtime::memory::format_bytes;
use kiln_runtime::QuantFormat;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Model: a diffusers folder or an LLM folder (config.json + safetensors, sharded or not),
    /// each written as a folder, or a single-file SD .safetensors (written as one file).
    #[arg(short = 'm', long)]
    model: PathBuf,

    /// Output path; must not exist.
    #[arg(short = 'o', long)]
    output: PathBuf,

    /// Block format: q8_0, q4_0 (ggml) or nf4 (bitsandbytes).
    #[arg(long = "type")]
    format: String,
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    let format: QuantFormat = args.format.parse()?;
    if !format.packable() {
        anyhow::bail!(
            "--type {format}: kiln reads {format} weights from GGUF files but packs only q8_0, q4_0 and nf4"
        );
    }
    let is_llm =
        args.model.join("config.json").is_file() && !args.model.join("model_index.json").is_file();
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
