//! The `kiln` command line: thin argument parsing over the runtime, kernels and models.

mod bench;
mod chat;
mod control;
mod devices;
mod generate;
mod generate_xyz;
mod hires;
mod quantize;
mod serve;
mod upscale;

use anyhow::Result;
use clap::{Parser, Subcommand};
use kiln_runtime::memory::format_bytes;
use kiln_runtime::{Device, DeviceChoice};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Stable Diffusion and LLM inference on any GPU through wgpu"
)]
struct Cli {
    /// Device to run on: auto (a real GPU, else the CPU backend), cpu, or gpu:N from `kiln devices`.
    #[arg(long, global = true, env = "KILN_DEVICE", default_value = "auto")]
    device: String,

    /// Print the device's peak memory use when the command finishes.
    #[arg(long, global = true)]
    report_memory: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List GPU adapters and the CPU backend with their capabilities.
    Devices {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Generate images: txt2img, img2img (--init) and inpainting (--init --mask).
    Generate(Box<generate::GenerateArgs>),
    /// Write a model with packed (quantised) layer weights that loads back directly.
    Quantize(quantize::QuantizeArgs),
    /// Serve the A1111 / OpenAI images HTTP API and a web page.
    Serve(Box<serve::ServeArgs>),
    /// Upscale an image with an ESRGAN / Real-ESRGAN model or a plain resizer.
    Upscale(Box<upscale::UpscaleArgs>),
    /// Chat with an LLM: one reply to -p, or an interactive conversation.
    Chat(Box<chat::ChatArgs>),
    /// Time kernels or models.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let choice: DeviceChoice = cli.device.parse()?;
    let device = match &cli.command {
        Command::Devices { json } => {
            devices::print(*json)?;
            None
        }
        Command::Generate(args) => {
            let device = Device::open(choice)?;
            generate::run(args, &device, cli.report_memory)?;
            // generate prints its own report (weights and activations apart).
            None
        }
        Command::Upscale(args) => {
            let device = Device::open(choice)?;
            upscale::run(args, &device)?;
            Some(device)
        }
        Command::Chat(args) => {
            let device = Device::open(choice)?;
            chat::run(args, &device)?;
            Some(device)
        }
        Command::Quantize(args) => {
            quantize::run(args)?;
            None
        }
        Command::Serve(args) => {
            serve::run(args, choice)?;
            None
        }
        Command::Bench(cmd) => {
            let device = bench::needs_device(cmd)
                .then(|| Device::open(choice))
                .transpose()?;
            bench::run(cmd, device.as_ref())?;
            device
        }
    };
    if cli.report_memory {
        if let Some(device) = device {
            let stats = device.memory_stats();
            eprintln!(
                "peak memory on {}: {} in tensors, {} reserved",
                device.name(),
                format_bytes(stats.peak_live),
                format_bytes(stats.peak_reserved)
            );
        }
    }
    Ok(())
}
