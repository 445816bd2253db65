//! `kiln bench`: timings of kernels (and, later, models).

mod kernels;
mod sd;

use anyhow::Result;
use clap::Subcommand;
use kiln_runtime::Device;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time each kernel at standard shapes.
    Kernels(kernels::KernelBenchArgs),
    /// Time one txt2img run stage by stage: text encoding, each UNet step, VAE decode.
    Sd(sd::SdBenchArgs),
}

pub fn run(cmd: &BenchCommand, device: &Device) -> Result<()> {
    match cmd {
        BenchCommand::Kernels(args) => kernels::run(args, device),
        BenchCommand::Sd(args) => sd::run(args, device),
    }
}
