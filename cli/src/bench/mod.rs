//! `kiln bench`: timings of kernels (and, later, models).

mod kernels;

use anyhow::Result;
use clap::Subcommand;
use kiln_runtime::Device;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time each kernel at standard shapes.
    Kernels(kernels::KernelBenchArgs),
}

pub fn run(cmd: &BenchCommand, device: &Device) -> Result<()> {
    match cmd {
        BenchCommand::Kernels(args) => kernels::run(args, device),
    }
}
