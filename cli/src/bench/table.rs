//! Shared by `kiln bench kernels` and `kiln bench models`: run a list of cases, print one row each,
//! and write the JSON report that tools/torch_bench.py reads and mirrors.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_benches::{measure, Case, Measurement, Size, Timing};
use kiln_runtime::{DType, Device};
use serde::{Deserialize, Serialize};

#[derive(clap::Args)]
pub struct TableArgs {
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Tiny shapes that finish in seconds even on a software adapter.
    #[arg(long)]
    pub quick: bool,
    /// Only cases whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Untimed runs before timing (default: 2 for kernels, 1 for models).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Timed runs per case (default: 10 for kernels, 3 for models).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Element types to run: f32, f16 or both.
    #[arg(long, default_value = "both")]
    pub dtype: String,
}

/// The JSON both kiln and tools/torch_bench.py write.
#[derive(Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub device: String,
    pub warmup: usize,
    pub iters: usize,
    pub results: Vec<Measurement>,
}

pub fn size(args: &TableArgs) -> Size {
    if args.quick {
        Size::Quick
    } else {
        Size::Standard
    }
}

fn dtypes(args: &TableArgs) -> Result<Vec<DType>> {
    Ok(match args.dtype.as_str() {
        "f32" => vec![DType::F32],
        "f16" => vec![DType::F16],
        "both" => vec![DType::F32, DType::F16],
        other => anyhow::bail!("--dtype must be f32, f16 or both, not `{other}`"),
    })
}

/// Runs `cases(dtype)` for each requested dtype the device supports; `defaults` are (warm-up,
/// iterations) when the flags do not say.
pub fn run(
    args: &TableArgs,
    device: &Device,
    defaults: (usize, usize),
    cases: impl Fn(DType) -> Vec<Case>,
) -> Result<()> {
    let dtypes = dtypes(args)?;
    let warmup = args.warmup.unwrap_or(defaults.0);
    let iters = args.iters.unwrap_or(defaults.1).max(1);
    println!("device: {}", device.name());
    println!(
        "{:<32} {:<40} {:>10} {:>14}  timing",
        "case", "shape", "ms", "rate"
    );
    let mut results = Vec::new();
    for dtype in dtypes {
        if !device.supports(dtype) {
            println!("({dtype} skipped: not supported by this device)");
            continue;
        }
        for case in cases(dtype) {
            if args
                .filter
                .as_ref()
                .is_some_and(|f| !case.name.contains(f.as_str()))
            {
                continue;
            }
            let m = measure(&case, device, warmup, iters)
                .with_context(|| format!("benchmark case `{}`", case.name))?;
            print_row(&m);
            results.push(m);
        }
    }
    if let Some(path) = &args.json {
        let report = Report {
            tool: "kiln".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            device: device.name(),
            warmup,
            iters,
            results,
        };
        write_json(path, &report)?;
    }
    Ok(())
}

fn print_row(m: &Measurement) {
    let rate = match (m.gflops, m.gbps, m.s_per_mpix) {
        (Some(g), _, _) => format!("{g:.1} GFLOP/s"),
        (_, Some(b), _) => format!("{b:.1} GB/s"),
        (_, _, Some(s)) => format!("{s:.2} s/MP"),
        _ => String::new(),
    };
    let timing = match m.timing {
        Timing::GpuTimestamps => "gpu timestamps",
        Timing::WallClock => "wall clock",
        Timing::CudaEvents => "cuda events",
    };
    println!(
        "{:<32} {:<40} {:>10.3} {:>14}  {timing}",
        m.name, m.shape, m.mean_ms, rate
    );
}

/// Writes next to the target and renames, so a failed run never leaves a partial file.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let tmp = path.with_extension("json.partial");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
