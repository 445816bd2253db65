//! `kiln bench compare`: joins a kiln report and a PyTorch report (tools/torch_bench.py) case by case
//! into one table: both times, their ratio, and each side's fraction of the device's peak — FLOP/s
//! from a small table of known devices (or --peak-gflops), bandwidth against the fastest copy either
//! tool measured in the same run.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln_benches::Measurement;

use super::table::Report;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// JSON from `kiln bench kernels|models --json`.
    kiln: PathBuf,
    /// JSON from tools/torch_bench.py for the same cases.
    torch: PathBuf,
    /// Also write the table as markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Peak GFLOP/s as F32[,F16] when the device is not in kiln's table (e.g. a CPU).
    #[arg(long)]
    peak_gflops: Option<String>,
}

/// Dense peaks (f32 without tensor cores, f16 with them), from the vendors' data sheets.
const KNOWN_DEVICES: [(&str, f64, f64); 3] = [
    ("H200", 67_000.0, 989_000.0),
    ("H100 PCIe", 51_000.0, 756_000.0),
    ("H100", 67_000.0, 989_000.0),
];

fn read(path: &PathBuf) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a bench report", path.display()))
}

fn peaks(device: &str, flag: Option<&str>) -> Result<Option<(f64, f64)>> {
    if let Some(text) = flag {
        let values: Vec<f64> = text
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("--peak-gflops `{text}`: expected F32[,F16] numbers"))?;
        return match values.as_slice() {
            [f32_peak] => Ok(Some((*f32_peak, *f32_peak))),
            [f32_peak, f16_peak] => Ok(Some((*f32_peak, *f16_peak))),
            _ => anyhow::bail!("--peak-gflops `{text}`: expected F32[,F16]"),
        };
    }
    Ok(KNOWN_DEVICES
        .iter()
        .find(|(name, ..)| device.contains(name))
        .map(|&(_, f32_peak, f16_peak)| (f32_peak, f16_peak)))
}

/// The fastest copy measured by either tool, per dtype (the bandwidth ceiling of this run).
fn copy_ceiling(reports: [&Report; 2], dtype: &str) -> Option<f64> {
    reports
        .iter()
        .flat_map(|r| &r.results)
        .filter(|m| m.op == "copy" && m.dtype == dtype)
        .filter_map(|m| m.gbps)
        .reduce(f64::max)
}

fn fraction(m: &Measurement, peak: Option<(f64, f64)>, ceiling: Option<f64>) -> String {
    let value = match (m.gflops, m.gbps) {
        (Some(g), _) => {
            peak.map(|(f32_peak, f16_peak)| g / if m.dtype == "f16" { f16_peak } else { f32_peak })
        }
        (_, Some(b)) => ceiling.map(|c| b / c),
        _ => None,
    };
    value.map_or("—".into(), |v| format!("{:.0}%", v * 100.0))
}

pub fn run(args: &CompareArgs) -> Result<()> {
    let kiln = read(&args.kiln)?;
    let torch = read(&args.torch)?;
    let peak = peaks(&kiln.device, args.peak_gflops.as_deref())?;
    let out = render(&kiln, &torch, peak)?;
    print!("{out}");
    if let Some(path) = &args.markdown {
        let tmp = path.with_extension("md.partial");
        std::fs::write(&tmp, &out).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The markdown table: one row per kiln case that PyTorch also ran, in kiln's order.
fn render(kiln: &Report, torch: &Report, peak: Option<(f64, f64)>) -> Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "kiln {} on {} vs {} {} on {} ({} warm-up, {} timed runs; ratio = kiln time / PyTorch time)\n",
        kiln.version, kiln.device, torch.tool, torch.version, torch.device, kiln.warmup, kiln.iters
    )?;
    writeln!(
        out,
        "| case | shape | kiln ms | PyTorch ms | ratio | kiln % peak | PyTorch % peak |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|")?;
    let mut unmatched = Vec::new();
    for k in &kiln.results {
        let Some(t) = torch.results.iter().find(|t| t.name == k.name) else {
            unmatched.push(k.name.as_str());
            continue;
        };
        let ceiling = copy_ceiling([kiln, torch], &k.dtype);
        writeln!(
            out,
            "| {} | {} | {:.3} | {:.3} | {:.2} | {} | {} |",
            k.name,
            k.shape,
            k.mean_ms,
            t.mean_ms,
            k.mean_ms / t.mean_ms,
            fraction(k, peak, ceiling),
            fraction(t, peak, ceiling)
        )?;
    }
    if !unmatched.is_empty() {
        writeln!(
            out,
            "\nNo PyTorch result for: {} (not run, or unsupported there).",
            unmatched.join(", ")
        )?;
    }
    if peak.is_none() {
        writeln!(
            out,
            "\nFLOP/s peak unknown for `{}`: pass --peak-gflops F32[,F16].",
            kiln.device
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_benches::Timing;

    fn m(
        name: &str,
        op: &str,
        dtype: &str,
        ms: f64,
        gflops: Option<f64>,
        gbps: Option<f64>,
    ) -> Measurement {
        Measurement {
            name: name.into(),
            op: op.into(),
            dtype: dtype.into(),
            shape: "[n]".into(),
            params: serde_json::Value::Null,
            iters: 3,
            mean_ms: ms,
            gflops,
            gbps,
            s_per_mpix: None,
            timing: Timing::WallClock,
        }
    }

    fn report(tool: &str, device: &str, results: Vec<Measurement>) -> Report {
        Report {
            tool: tool.into(),
            version: "1".into(),
            device: device.into(),
            warmup: 1,
            iters: 3,
            results,
        }
    }

    #[test]
    fn rows_join_by_name_with_ratio_and_fractions_of_peak() {
        let kiln = report(
            "kiln",
            "NVIDIA H100 80GB HBM3",
            vec![
                m("matmul f16", "matmul", "f16", 2.0, Some(494_500.0), None),
                m("copy f16", "copy", "f16", 1.0, None, Some(1500.0)),
                m("add f16", "add", "f16", 1.0, None, Some(750.0)),
                m("unet f16", "unet", "f16", 30.0, None, None),
                m("rope f16", "rope", "f16", 1.0, None, Some(10.0)),
            ],
        );
        let torch = report(
            "pytorch",
            "NVIDIA H100 80GB HBM3",
            vec![
                m("matmul f16", "matmul", "f16", 1.0, Some(989_000.0), None),
                m("copy f16", "copy", "f16", 0.5, None, Some(3000.0)),
                m("add f16", "add", "f16", 0.5, None, Some(1500.0)),
                m("unet f16", "unet", "f16", 20.0, None, None),
            ],
        );
        let peak = peaks(&kiln.device, None).unwrap();
        assert_eq!(peak, Some((67_000.0, 989_000.0)));
        let table = render(&kiln, &torch, peak).unwrap();
        // kiln at half PyTorch's speed: ratio 2, 50% vs 100% of the tensor-core peak.
        assert!(
            table.contains("| matmul f16 | [n] | 2.000 | 1.000 | 2.00 | 50% | 100% |"),
            "{table}"
        );
        // Bandwidth rows against the fastest copy of the run (PyTorch's 3000 GB/s).
        assert!(
            table.contains("| add f16 | [n] | 1.000 | 0.500 | 2.00 | 25% | 50% |"),
            "{table}"
        );
        assert!(
            table.contains("| unet f16 | [n] | 30.000 | 20.000 | 1.50 | — | — |"),
            "{table}"
        );
        assert!(table.contains("No PyTorch result for: rope f16"), "{table}");
    }

    #[test]
    fn peaks_come_from_the_flag_or_the_device_table() {
        assert_eq!(peaks("cpu", None).unwrap(), None);
        assert_eq!(peaks("cpu", Some("190")).unwrap(), Some((190.0, 190.0)));
        assert_eq!(peaks("x", Some("100, 200")).unwrap(), Some((100.0, 200.0)));
        assert!(peaks("x", Some("fast")).is_err());
        assert_eq!(
            peaks("NVIDIA H100 PCIe", None).unwrap(),
            Some((51_000.0, 756_000.0))
        );
        assert_eq!(
            peaks("NVIDIA H200", None).unwrap(),
            Some((67_000.0, 989_000.0))
        );
    }
}
