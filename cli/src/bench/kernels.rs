//! Placeholder until the kernel table lands.

use anyhow::Result;
use kiln_runtime::Device;

#[derive(clap::Args)]
pub struct KernelBenchArgs {
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub fn run(_args: &KernelBenchArgs, _device: &Device) -> Result<()> {
    anyhow::bail!("kernel benchmarks are not written yet")
}
