//! A1111's X/Y/Z plot `script_args`, read by position as the script's `run(p, x_type, x_values,
//! x_values_dropdown, y_type, ..., z_values_dropdown, draw_legend, include_lone_images,
//! include_sub_grids, no_fixed_seeds, margin_size, csv_mode, raw_mode)` takes them.

use kiln_models::xyz::{Axis, AxisKind, XyzPlot};
use serde_json::Value;

use super::FIELD;
use crate::error::{ApiError, ApiResult};

/// The script's arguments beyond the axes.
pub struct XyzRequest {
    pub plot: XyzPlot,
    pub include_lone_images: bool,
    pub include_sub_grids: bool,
}

fn arg(args: &[Value], i: usize) -> Option<&Value> {
    args.get(i).filter(|v| !v.is_null())
}

fn flag(args: &[Value], i: usize, name: &str, default: bool) -> ApiResult<bool> {
    match arg(args, i) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::invalid(
            FIELD,
            format!("script_args[{i}] ({name}) must be true or false, got {other}"),
        )),
    }
}

/// A1111's `run(p, x_type, x_values, x_values_dropdown, y_type, ..., z_values_dropdown,
/// draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, margin_size, csv_mode,
/// raw_mode)`. A type is an index into A1111's axis list for txt2img or img2img (a label is
/// accepted too). Axes with a dropdown in A1111 (Sampler, Checkpoint name) read the dropdown
/// list unless `csv_mode`, falling back to the text when the list is empty. Seeds are always
/// fixed before the plot (`no_fixed_seeds` is not honoured: each cell must be reproducible).
pub fn parse_script_args(
    args: &[Value],
    img2img: bool,
    random: &mut dyn FnMut() -> u64,
) -> ApiResult<XyzRequest> {
    let csv_mode = flag(args, 14, "csv_mode", false)?;
    let raw_mode = flag(args, 15, "raw_mode", false)?;
    let mut axes = Vec::new();
    for (n, name) in ["x", "y", "z"].iter().enumerate() {
        let at = n * 3;
        let kind = match arg(args, at) {
            None => AxisKind::Nothing,
            Some(Value::Number(i)) => {
                let i = i.as_i64().unwrap_or(-1);
                AxisKind::from_index(i, img2img)
            }
            .map_err(|e| {
                ApiError::invalid(FIELD, format!("script_args[{at}] ({name}_type): {e}"))
            })?,
            Some(Value::String(label)) => AxisKind::from_name(label).map_err(|e| {
                ApiError::invalid(FIELD, format!("script_args[{at}] ({name}_type): {e}"))
            })?,
            Some(other) => {
                return Err(ApiError::invalid(
                    FIELD,
                    format!("script_args[{at}] ({name}_type) must be an axis index, got {other}"),
                ))
            }
        };
        let text = match arg(args, at + 1) {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(x)) => x.to_string(),
            Some(other) => {
                return Err(ApiError::invalid(
                    FIELD,
                    format!(
                        "script_args[{}] ({name}_values) must be text, got {other}",
                        at + 1
                    ),
                ))
            }
        };
        let dropdown: Vec<String> = match arg(args, at + 2) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            _ => Vec::new(),
        };
        let has_choices = matches!(
            kind,
            AxisKind::Sampler | AxisKind::CheckpointName | AxisKind::HiresUpscaler
        );
        let text = if has_choices && !csv_mode && !dropdown.is_empty() {
            csv_row(&dropdown)
        } else if raw_mode && text.trim().contains('\n') {
            // "Use raw text lines": one value per line, commas kept.
            csv_row(&text.trim().lines().map(str::to_string).collect::<Vec<_>>())
        } else {
            text
        };
        let axis = Axis::parse(kind, &text).map_err(|e| ApiError::invalid(FIELD, e.to_string()))?;
        axes.push(axis);
    }
    let draw_legend = flag(args, 9, "draw_legend", true)?;
    let include_lone_images = flag(args, 10, "include_lone_images", false)?;
    let include_sub_grids = flag(args, 11, "include_sub_grids", false)?;
    flag(args, 12, "no_fixed_seeds", false)?;
    let margin = match arg(args, 13) {
        None => 0,
        Some(v) => v.as_u64().filter(|m| *m <= 500).ok_or_else(|| {
            ApiError::invalid(
                FIELD,
                format!("script_args[13] (margin_size) must be 0 to 500, got {v}"),
            )
        })? as usize,
    };
    let [x, y, z]: [Axis; 3] = axes
        .try_into()
        .map_err(|_| ApiError::invalid(FIELD, "three axes"))?;
    let mut plot = XyzPlot::new(x, y, z);
    plot.draw_legend = draw_legend;
    plot.margin = margin;
    plot.fix_seeds(random);
    Ok(XyzRequest {
        plot,
        include_lone_images,
        include_sub_grids,
    })
}

/// Python's `csv.writer` row: fields with a comma, quote or line break quoted, quotes doubled.
fn csv_row(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::super::is_xyz;
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Vec<Value> {
        v.as_array().unwrap().clone()
    }

    #[test]
    fn script_args_as_a1111_sends_them() {
        let a = args(json!([
            4,
            "1-3",
            [],
            9,
            "",
            ["Euler", "Euler a"],
            0,
            "",
            [],
            true,
            true,
            false,
            false,
            0,
            false,
            false
        ]));
        let r = parse_script_args(&a, false, &mut || 5).unwrap();
        assert_eq!(r.plot.x.kind, AxisKind::Steps);
        assert_eq!(r.plot.x.value_texts(), ["1", "2", "3"]);
        assert_eq!(r.plot.y.kind, AxisKind::Sampler);
        assert_eq!(r.plot.y.value_texts(), ["Euler", "Euler a"]);
        assert_eq!(r.plot.z.kind, AxisKind::Nothing);
        assert!(r.include_lone_images && !r.include_sub_grids);
        assert_eq!((r.plot.draw_legend, r.plot.margin), (true, 0));
        // csv_mode reads the text; a seed axis's -1 is fixed.
        let a = args(json!([
            9,
            "Euler, DDIM",
            ["Heun"],
            1,
            "-1,3",
            [],
            0,
            "",
            [],
            true,
            false,
            true,
            false,
            16,
            true
        ]));
        let r = parse_script_args(&a, false, &mut || 5).unwrap();
        // draw_legend (9), include_lone_images (10), include_sub_grids (11), margin_size (13).
        assert!(r.plot.draw_legend && !r.include_lone_images && r.include_sub_grids);
        assert_eq!(r.plot.margin, 16);
        assert_eq!(r.plot.x.value_texts(), ["Euler", "DDIM"]);
        assert_eq!(r.plot.y.value_texts(), ["5", "3"]);
    }

    #[test]
    fn bad_script_args_name_the_axis() {
        let detail = |a: Value| {
            let e = parse_script_args(&args(a), false, &mut || 0).err().unwrap();
            assert_eq!(e.field.as_deref(), Some("script_args"));
            e.detail
        };
        let e = detail(json!([2, "1,2"]));
        assert!(e.contains("Var. seed"), "{e}");
        let e = detail(json!([6, "7,x"]));
        assert!(e.contains("CFG Scale value \"x\""), "{e}");
        let e = detail(json!(["4", "1"]));
        assert!(e.contains("x_type"), "{e}");
        assert!(is_xyz("x/y/z plot") && is_xyz("X/Y/Z plot") && !is_xyz("prompt matrix"));
    }
}
