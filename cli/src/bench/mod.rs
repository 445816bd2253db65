//! `kiln bench`: timings of kernels, whole models and one txt2img run, and the side-by-side
//! comparison with PyTorch, and concurrent streams against a running chat server.

mod compare;
mod http;
mod kernels;
mod llm;
mod models;
mod sd;
mod serve;
mod table;

use anyhow::Result;
use clap::Subcommand;
use kiln_runtime::Device;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time each kernel at standard shapes.
    Kernels(table::TableArgs),
    /// Time an SD 1.5-architecture UNet evaluation, VAE decode and an ESRGAN x4 upscaler (random
    /// weights).
    Models(table::TableArgs),
    /// Time one txt2img run stage by stage: text encoding, each UNet step, VAE decode.
    Sd(sd::SdBenchArgs),
    /// Prefill and decode tokens/s of an LLM (a folder or random weights of a config).
    Llm(Box<llm::LlmBenchArgs>),
    /// Join a kiln report and a PyTorch report (tools/torch_bench.py) into one table.
    Compare(compare::CompareArgs),
    /// Concurrent streamed completions against a running server (kiln serve or llama-server):
    /// aggregate tokens/s, time to first token and per-stream decode speed per stream count.
    Serve(Box<serve::ServeBenchArgs>),
}

/// Whether the subcommand needs a device (compare only reads files; serve only talks HTTP).
pub fn needs_device(cmd: &BenchCommand) -> bool {
    !matches!(cmd, BenchCommand::Compare(_) | BenchCommand::Serve(_))
}

pub fn run(cmd: &BenchCommand, device: Option<&Device>) -> Result<()> {
    let device = || device.ok_or_else(|| anyhow::anyhow!("no device was opened"));
    match cmd {
        BenchCommand::Kernels(args) => kernels::run(args, device()?),
        BenchCommand::Models(args) => models::run(args, device()?),
        BenchCommand::Sd(args) => sd::run(args, device()?),
        BenchCommand::Llm(args) => llm::run_bench(args, device()?),
        BenchCommand::Compare(args) => compare::run(args),
        BenchCommand::Serve(args) => serve::run(args),
    }
}
