//! `kiln bench`: timings of kernels, whole models and one txt2img run, and the side-by-side
//! comparison with PyTorch.

mod compare;
mod kernels;
mod llm;
mod models;
mod sd;
mod table;

use anyhow::Result;
use clap::Subcommand;
use kiln_runtime::Device;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time each kernel at standard shapes.
    Kernels(table::TableArgs),
    /// Time an SD 1.5-architecture UNet evaluation and VAE decode (random weights).
    Models(table::TableArgs),
    /// Time one txt2img run stage by stage: text encoding, each UNet step, VAE decode.
    Sd(sd::SdBenchArgs),
    /// Prefill and decode tokens/s of an LLM (a folder or random weights of a config).
    Llm(Box<llm::LlmBenchArgs>),
    /// Join a kiln report and a PyTorch report (tools/torch_bench.py) into one table.
    Compare(compare::CompareArgs),
}

/// Whether the subcommand needs a device (compare only reads files).
pub fn needs_device(cmd: &BenchCommand) -> bool {
    !matches!(cmd, BenchCommand::Compare(_))
}

pub fn run(cmd: &BenchCommand, device: Option<&Device>) -> Result<()> {
    let device = || device.ok_or_else(|| anyhow::anyhow!("no device was opened"));
    match cmd {
        BenchCommand::Kernels(args) => kernels::run(args, device()?),
        BenchCommand::Models(args) => models::run(args, device()?),
        BenchCommand::Sd(args) => sd::run(args, device()?),
        BenchCommand::Llm(args) => llm::run_bench(args, device()?),
        BenchCommand::Compare(args) => compare::run(args),
    }
}
