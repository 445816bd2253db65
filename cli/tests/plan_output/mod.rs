//! Reading `kiln generate --plan`'s report back in the CLI tests.

/// A `--max-vram` value that fits the plan's streamed peak (the report's last line), and no more
/// than a hundredth of its unit over it: below the resident peak, so only streaming fits.
pub fn streamed_budget(report: &str) -> String {
    let peak = report
        .lines()
        .find(|l| l.starts_with("peak device memory"))
        .unwrap_or_else(|| panic!("no peak line in\n{report}"));
    let streamed = peak
        .rsplit_once(", ")
        .map(|(_, s)| s.trim_end_matches(" with the UNet streamed"))
        .unwrap();
    // Printed to two decimals: a hundredth more is at least the peak.
    let (value, unit) = streamed.split_once(' ').unwrap();
    format!("{:.2}{unit}", value.parse::<f64>().unwrap() + 0.01)
}
