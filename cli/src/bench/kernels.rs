//! `kiln bench kernels`: each kernel at standard shapes, as a table and optionally JSON.

use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln_benches::{kernel_cases, measure, Measurement, Size, Timing};
use kiln_runtime::{DType, Device};
use serde::Serialize;

#[derive(clap::Args)]
pub struct KernelBenchArgs {
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Tiny shapes that finish in seconds even on a software adapter.
    #[arg(long)]
    quick: bool,
    /// Only cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs per case.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Element types to run: f32, f16 or both.
    #[arg(long, default_value = "both")]
    dtype: String,
}

#[derive(Serialize)]
struct Report<'a> {
    tool: &'static str,
    version: &'static str,
    device: String,
    warmup: usize,
    iters: usize,
    results: &'a [Measurement],
}

pub fn run(args: &KernelBenchArgs, device: &Device) -> Result<()> {
    let dtypes = match args.dtype.as_str() {
        "f32" => vec![DType::F32],
        "f16" => vec![DType::F16],
        "both" => vec![DType::F32, DType::F16],
        other => anyhow::bail!("--dtype must be f32, f16 or both, not `{other}`"),
    };
    let size = if args.quick {
        Size::Quick
    } else {
        Size::Standard
    };
    println!("device: {}", device.name());
    println!(
        "{:<32} {:<34} {:>10} {:>14}  timing",
        "case", "shape", "ms", "rate"
    );
    let mut results = Vec::new();
    for dtype in dtypes {
        if !device.supports(dtype) {
            println!("({dtype} skipped: not supported by this device)");
            continue;
        }
        for case in kernel_cases(size, dtype) {
            if args
                .filter
                .as_ref()
                .is_some_and(|f| !case.name.contains(f.as_str()))
            {
                continue;
            }
            let m = measure(&case, device, args.warmup, args.iters)
                .with_context(|| format!("benchmark case `{}`", case.name))?;
            let rate = match (m.gflops, m.gbps) {
                (Some(g), _) => format!("{g:.1} GFLOP/s"),
                (_, Some(b)) => format!("{b:.1} GB/s"),
                _ => String::new(),
            };
            let timing = match m.timing {
                Timing::GpuTimestamps => "gpu timestamps",
                Timing::WallClock => "wall clock",
            };
            println!(
                "{:<32} {:<34} {:>10.3} {:>14}  {timing}",
                m.name, m.shape, m.mean_ms, rate
            );
            results.push(m);
        }
    }
    if let Some(path) = &args.json {
        let report = Report {
            tool: "kiln",
            version: env!("CARGO_PKG_VERSION"),
            device: device.name(),
            warmup: args.warmup,
            iters: args.iters,
            results: &results,
        };
        let text = serde_json::to_string_pretty(&report)?;
        let tmp = path.with_extension("json.partial");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
