//! Axes with their values, the cells of a plot in A1111's processing order, and each cell's
//! generation settings.

use std::path::Path;

use super::axis::{AxisKind, ValueType};
use super::values::{csv_fields, format_float, parse_floats, parse_ints};
use super::{hires_fix_unavailable, XyzError};
use crate::pipeline::GenerationParams;
use crate::pipeline::HiresUpscaler;
use crate::schedulers::SamplerSpec;

#[derive(Clone, Debug, PartialEq)]
pub enum AxisValue {
    Int(i64),
    Float(f64),
    Text(String),
}

/// One axis: its type, the values text as given (it goes into the grid's infotext) and the
/// values it expands to.
#[derive(Clone, Debug)]
pub struct Axis {
    pub kind: AxisKind,
    pub text: String,
    pub values: Vec<AxisValue>,
}

impl Axis {
    /// Reads `text` as A1111 does for the axis's value type. "Nothing" has one empty value.
    pub fn parse(kind: AxisKind, text: &str) -> Result<Axis, XyzError> {
        let label = kind.label();
        let values: Vec<AxisValue> = match (kind, kind.value_type()) {
            (AxisKind::Nothing, _) => vec![AxisValue::Text(String::new())],
            (_, ValueType::Int) => parse_ints(label, text)?
                .into_iter()
                .map(AxisValue::Int)
                .collect(),
            (_, ValueType::Float) => parse_floats(label, text)?
                .into_iter()
                .map(AxisValue::Float)
                .collect(),
            (_, ValueType::Text) => csv_fields(text).into_iter().map(AxisValue::Text).collect(),
        };
        if values.is_empty() {
            return Err(XyzError::NoValues {
                axis: label.to_string(),
            });
        }
        let axis = Axis {
            kind,
            text: text.to_string(),
            values,
        };
        axis.check_values()?;
        Ok(axis)
    }

    /// The checks A1111 makes before starting (and the ones its first cell would fail), so a
    /// bad value stops the plot before anything is generated.
    fn check_values(&self) -> Result<(), XyzError> {
        let label = self.kind.label();
        for (i, v) in self.values.iter().enumerate() {
            let bad = |why: &str| Err(XyzError::value(label, &display(v), why));
            match (self.kind, v) {
                (AxisKind::Seed, AxisValue::Int(s)) if *s < -1 || *s > u32::MAX as i64 => {
                    return bad("a seed is -1 (random) or 0 ..= 4294967295")
                }
                // The server holds steps to its --max-steps; the library only to >= 1.
                (AxisKind::Steps, AxisValue::Int(s)) if *s < 1 => {
                    return bad("steps must be at least 1")
                }
                (AxisKind::ClipSkip, AxisValue::Int(s)) if *s < 1 || *s > 12 => {
                    return bad("clip skip must be 1 ..= 12")
                }
                (AxisKind::CfgScale, AxisValue::Float(c)) if !(0.0..=100.0).contains(c) => {
                    return bad("CFG scale must be 0 ..= 100")
                }
                (AxisKind::Denoising, AxisValue::Float(d)) if !(*d > 0.0 && *d <= 1.0) => {
                    return bad("denoising strength must be in (0, 1]")
                }
                (AxisKind::Sampler, AxisValue::Text(name)) => {
                    if let Err(e) = SamplerSpec::parse(name) {
                        return bad(&e.to_string());
                    }
                }
                // Prompt S/R may replace with nothing, but must search for something.
                (AxisKind::PromptSr, AxisValue::Text(t)) if t.is_empty() && i == 0 => {
                    return bad("the first value (the text to search for) is empty")
                }
                (AxisKind::CheckpointName, AxisValue::Text(t)) if t.is_empty() => {
                    return bad("empty value")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A1111's labels: "Steps: 20", "CFG Scale: 7.0"; the value alone for Prompt S/R and
    /// Sampler, the file name for a checkpoint, nothing for "Nothing".
    pub fn labels(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|v| match self.kind {
                AxisKind::Nothing => String::new(),
                AxisKind::PromptSr | AxisKind::Sampler => display(v),
                AxisKind::CheckpointName => {
                    let t = display(v);
                    Path::new(&t)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or(t)
                }
                kind => format!("{}: {}", kind.label(), display(v)),
            })
            .collect()
    }

    /// The values as text (a checkpoint's name as given).
    pub fn value_texts(&self) -> Vec<String> {
        self.values.iter().map(display).collect()
    }

    /// A1111 replaces each -1 of a seed axis with a random seed once, before the first cell.
    pub fn fix_seeds(&mut self, random: &mut dyn FnMut() -> u64) {
        if self.kind != AxisKind::Seed {
            return;
        }
        for v in &mut self.values {
            if *v == AxisValue::Int(-1) {
                *v = AxisValue::Int((random() & 0xffff_ffff) as i64);
            }
        }
    }

    fn cost(&self) -> f64 {
        if self.kind == AxisKind::CheckpointName {
            1.0
        } else {
            0.0
        }
    }
}

fn display(v: &AxisValue) -> String {
    match v {
        AxisValue::Int(i) => i.to_string(),
        AxisValue::Float(f) => format_float(*f),
        AxisValue::Text(t) => t.clone(),
    }
}

/// One combination: its indices on each axis and its place among the cells (x fastest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub ix: usize,
    pub iy: usize,
    pub iz: usize,
    pub index: usize,
}

/// What one cell generates: the settings, and the checkpoint it names (Checkpoint name axis).
#[derive(Clone, Debug)]
pub struct CellSettings {
    pub params: GenerationParams,
    pub checkpoint: Option<String>,
}

/// The three axes (unused ones are "Nothing") and A1111's drawing options.
#[derive(Clone, Debug)]
pub struct XyzPlot {
    pub x: Axis,
    pub y: Axis,
    pub z: Axis,
    pub draw_legend: bool,
    /// Pixels between cells ("Grid margins").
    pub margin: usize,
}

impl XyzPlot {
    pub fn new(x: Axis, y: Axis, z: Axis) -> XyzPlot {
        XyzPlot {
            x,
            y,
            z,
            draw_legend: true,
            margin: 0,
        }
    }

    fn axes(&self) -> [&Axis; 3] {
        [&self.x, &self.y, &self.z]
    }

    pub fn cell_count(&self) -> usize {
        self.x.values.len() * self.y.values.len() * self.z.values.len()
    }

    pub fn fix_seeds(&mut self, random: &mut dyn FnMut() -> u64) {
        self.x.fix_seeds(random);
        self.y.fix_seeds(random);
        self.z.fix_seeds(random);
    }

    /// Every cell in the order A1111 runs them: z, then y, then x outermost first, except that
    /// an axis that is slow to change (a checkpoint) moves outermost so each model loads once.
    pub fn cells(&self) -> Vec<Cell> {
        let (nx, ny, nz) = (
            self.x.values.len(),
            self.y.values.len(),
            self.z.values.len(),
        );
        let (cx, cy, cz) = (self.x.cost(), self.y.cost(), self.z.cost());
        // Loop order, outermost first, as axis numbers 0 = x, 1 = y, 2 = z.
        let order: [usize; 3] = if cx > cy && cx > cz {
            if cy > cz {
                [0, 1, 2]
            } else {
                [0, 2, 1]
            }
        } else if cy > cx && cy > cz {
            if cx > cz {
                [1, 0, 2]
            } else {
                [1, 2, 0]
            }
        } else if cz > cx && cz > cy && cx > cy {
            [2, 0, 1]
        } else {
            [2, 1, 0]
        };
        let sizes = [nx, ny, nz];
        let mut cells = Vec::with_capacity(nx * ny * nz);
        for a in 0..sizes[order[0]] {
            for b in 0..sizes[order[1]] {
                for c in 0..sizes[order[2]] {
                    let mut i = [0; 3];
                    i[order[0]] = a;
                    i[order[1]] = b;
                    i[order[2]] = c;
                    cells.push(Cell {
                        ix: i[0],
                        iy: i[1],
                        iz: i[2],
                        index: i[0] + i[1] * nx + i[2] * nx * ny,
                    });
                }
            }
        }
        cells
    }

    /// Checks the axes against the base settings before anything runs: the search string of
    /// Prompt S/R must be in the prompt or negative prompt, hires-fix axes are refused, and
    /// each cell's settings must be valid.
    pub fn check(&self, base: &GenerationParams) -> Result<(), XyzError> {
        // An axis type may be given twice, as in A1111 (two Prompt S/R axes search for two
        // strings); the later axis's value wins where they set the same thing.
        for axis in self.axes() {
            match axis.kind {
                AxisKind::HiresUpscaler if base.hires.is_none() => {
                    return Err(hires_fix_unavailable(axis.kind))
                }
                AxisKind::HiresUpscaler => {
                    for v in &axis.values {
                        let name = display(v);
                        if HiresUpscaler::builtin(&name).is_none() {
                            return Err(XyzError::value(
                                axis.kind.label(),
                                &name,
                                &format!(
                                    "not an upscaler (known: {})",
                                    HiresUpscaler::builtin_names().join(", ")
                                ),
                            ));
                        }
                    }
                }
                AxisKind::Denoising if base.init.is_none() && base.hires.is_none() => {
                    return Err(hires_fix_unavailable(axis.kind))
                }
                AxisKind::PromptSr => {
                    let search = display(&axis.values[0]);
                    if !base.prompt.contains(&search) && !base.negative_prompt.contains(&search) {
                        return Err(XyzError::value(
                            "Prompt S/R",
                            &search,
                            "not found in the prompt or negative prompt",
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The settings of `cell`: `base` with each axis's value applied, x, then y, then z.
    pub fn cell_settings(
        &self,
        base: &GenerationParams,
        cell: Cell,
    ) -> Result<CellSettings, XyzError> {
        let mut params = base.clone();
        let mut checkpoint = None;
        for (axis, i) in self.axes().into_iter().zip([cell.ix, cell.iy, cell.iz]) {
            let v = &axis.values[i];
            let label = axis.kind.label();
            let bad = |why: &str| XyzError::value(label, &display(v), why);
            match (axis.kind, v) {
                (AxisKind::Nothing, _) => {}
                (AxisKind::Seed, AxisValue::Int(s)) => {
                    params.seed = u64::try_from(*s).map_err(|_| bad("seed not fixed"))?
                }
                (AxisKind::Steps, AxisValue::Int(s)) => params.steps = *s as usize,
                (AxisKind::ClipSkip, AxisValue::Int(s)) => params.clip_skip = *s as usize,
                (AxisKind::CfgScale, AxisValue::Float(c)) => params.cfg_scale = *c as f32,
                (AxisKind::Denoising, AxisValue::Float(d)) => {
                    match (&mut params.init, &mut params.hires) {
                        (Some(init), _) => init.strength = *d,
                        // On txt2img A1111's Denoising axis sets the hires pass's strength.
                        (None, Some(hires)) => hires.denoising_strength = *d,
                        (None, None) => return Err(hires_fix_unavailable(axis.kind)),
                    }
                }
                (AxisKind::PromptSr, AxisValue::Text(t)) => {
                    let search = display(&axis.values[0]);
                    params.prompt = params.prompt.replace(&search, t);
                    params.negative_prompt = params.negative_prompt.replace(&search, t);
                }
                (AxisKind::Sampler, AxisValue::Text(name)) => {
                    let spec = SamplerSpec::parse(name).map_err(|e| bad(&e.to_string()))?;
                    // A name without a schedule keeps the run's schedule when the sampler has it.
                    params.sampler = if spec.schedule == Default::default() {
                        spec.with_schedule(base.sampler.schedule).unwrap_or(spec)
                    } else {
                        spec
                    };
                }
                (AxisKind::CheckpointName, AxisValue::Text(name)) => {
                    checkpoint = Some(name.clone())
                }
                (AxisKind::HiresUpscaler, AxisValue::Text(name)) => match &mut params.hires {
                    Some(hires) => {
                        hires.upscaler =
                            HiresUpscaler::builtin(name).ok_or_else(|| bad("not an upscaler"))?
                    }
                    None => return Err(hires_fix_unavailable(axis.kind)),
                },
                _ => return Err(bad("wrong value type for this axis")),
            }
        }
        Ok(CellSettings { params, checkpoint })
    }

    /// A1111's fields of a grid's infotext: `Script`, then `X Type`, `X Values` (as typed) and
    /// for a seed axis `Fixed X Values`, the same for Y, and for the main grid Z.
    pub fn script_fields(&self, with_z: bool) -> Vec<(String, String)> {
        let mut fields = vec![("Script".to_string(), super::SCRIPT_TITLE.to_string())];
        let named: &[(&str, &Axis)] = &[("X", &self.x), ("Y", &self.y), ("Z", &self.z)];
        for (name, axis) in named.iter().take(if with_z { 3 } else { 2 }) {
            if axis.kind == AxisKind::Nothing {
                continue;
            }
            fields.push((format!("{name} Type"), axis.kind.label().to_string()));
            fields.push((format!("{name} Values"), axis.text.clone()));
            if axis.kind == AxisKind::Seed {
                let fixed: Vec<String> = axis.values.iter().map(display).collect();
                fields.push((format!("Fixed {name} Values"), fixed.join(", ")));
            }
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(kind: AxisKind, text: &str) -> Axis {
        Axis::parse(kind, text).unwrap()
    }

    #[test]
    fn cells_run_z_then_y_then_x_and_checkpoints_outermost() {
        let plot = XyzPlot::new(
            axis(AxisKind::Steps, "1,2"),
            axis(AxisKind::CfgScale, "5,6,7"),
            axis(AxisKind::Nothing, ""),
        );
        let cells = plot.cells();
        assert_eq!(cells.len(), 6);
        let idx: Vec<usize> = cells.iter().map(|c| c.index).collect();
        assert_eq!(idx, [0, 1, 2, 3, 4, 5]);
        assert_eq!((cells[1].ix, cells[1].iy), (1, 0));
        let plot = XyzPlot::new(
            axis(AxisKind::CheckpointName, "a,b"),
            axis(AxisKind::Steps, "1,2"),
            axis(AxisKind::Nothing, ""),
        );
        let idx: Vec<usize> = plot.cells().iter().map(|c| c.index).collect();
        // x (checkpoint) outermost, then z, then y.
        assert_eq!(idx, [0, 2, 1, 3]);
    }

    #[test]
    fn settings_apply_each_axis() {
        let mut base = GenerationParams::new("a red circle");
        base.negative_prompt = "red noise".into();
        base.seed = 9;
        let plot = XyzPlot::new(
            axis(AxisKind::PromptSr, "red,blue"),
            axis(AxisKind::Sampler, "Euler a, DPM++ 2M Karras"),
            axis(AxisKind::Seed, "3,4"),
        );
        plot.check(&base).unwrap();
        let cell = plot.cells()[7];
        assert_eq!((cell.ix, cell.iy, cell.iz), (1, 1, 1));
        let s = plot.cell_settings(&base, cell).unwrap();
        assert_eq!(s.params.prompt, "a blue circle");
        assert_eq!(s.params.negative_prompt, "blue noise");
        assert_eq!(s.params.seed, 4);
        assert_eq!(
            s.params.sampler,
            SamplerSpec::parse("DPM++ 2M Karras").unwrap()
        );
        assert_eq!(s.checkpoint, None);
        let first = plot.cell_settings(&base, plot.cells()[0]).unwrap();
        assert_eq!(first.params.prompt, "a red circle");
        assert_eq!(first.params.seed, 3);
    }

    #[test]
    fn two_prompt_sr_axes_and_an_empty_replacement() {
        let base = GenerationParams::new("a red circle");
        let plot = XyzPlot::new(
            axis(AxisKind::PromptSr, "red,"),
            axis(AxisKind::PromptSr, "circle,square"),
            axis(AxisKind::Nothing, ""),
        );
        plot.check(&base).unwrap();
        let last = plot.cells()[3];
        assert_eq!(
            plot.cell_settings(&base, last).unwrap().params.prompt,
            "a  square"
        );
        assert!(Axis::parse(AxisKind::PromptSr, ",red").is_err());
    }

    #[test]
    fn labels_and_infotext_fields_are_a1111s() {
        let mut plot = XyzPlot::new(
            axis(AxisKind::CfgScale, "5,7.5"),
            axis(AxisKind::Seed, "-1, 12"),
            axis(AxisKind::Nothing, ""),
        );
        assert_eq!(plot.x.labels(), ["CFG Scale: 5.0", "CFG Scale: 7.5"]);
        plot.fix_seeds(&mut || 77);
        assert_eq!(plot.y.labels(), ["Seed: 77", "Seed: 12"]);
        assert_eq!(plot.z.labels(), [""]);
        let fields = plot.script_fields(true);
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Script"), Some("X/Y/Z plot"));
        assert_eq!(get("X Type"), Some("CFG Scale"));
        assert_eq!(get("X Values"), Some("5,7.5"));
        assert_eq!(get("Y Values"), Some("-1, 12"));
        assert_eq!(get("Fixed Y Values"), Some("77, 12"));
        assert_eq!(get("Z Type"), None);
        let ckpt = axis(AxisKind::CheckpointName, "models/a.safetensors");
        assert_eq!(ckpt.labels(), ["a.safetensors"]);
    }

    #[test]
    fn bad_settings_are_refused_before_running() {
        let base = GenerationParams::new("a red circle");
        let e = Axis::parse(AxisKind::Sampler, "Euler, Bogus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Sampler") && e.contains("\"Bogus\""), "{e}");
        let e = Axis::parse(AxisKind::Steps, "0").unwrap_err().to_string();
        assert!(e.contains("Steps") && e.contains("\"0\""), "{e}");
        let e = Axis::parse(AxisKind::Steps, "").unwrap_err().to_string();
        assert!(e.contains("Steps has no values"), "{e}");
        let sr = XyzPlot::new(
            axis(AxisKind::PromptSr, "green,blue"),
            axis(AxisKind::Nothing, ""),
            axis(AxisKind::Nothing, ""),
        );
        let e = sr.check(&base).unwrap_err().to_string();
        assert!(e.contains("Prompt S/R") && e.contains("green"), "{e}");
        let hires = XyzPlot::new(
            axis(AxisKind::HiresUpscaler, "Latent"),
            axis(AxisKind::Nothing, ""),
            axis(AxisKind::Nothing, ""),
        );
        let e = hires.check(&base).unwrap_err().to_string();
        assert!(e.contains("varies the hires fix"), "{e}");
        let denoise = XyzPlot::new(
            axis(AxisKind::Denoising, "0.5"),
            axis(AxisKind::Nothing, ""),
            axis(AxisKind::Nothing, ""),
        );
        assert!(denoise.check(&base).is_err());
    }
}
