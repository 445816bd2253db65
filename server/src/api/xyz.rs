//! `script_name: "x/y/z plot"` on txt2img / img2img: A1111's X/Y/Z plot script with its
//! positional `script_args`. Every cell is checked first (axes, checkpoints, the grid against
//! `--max-pixels`, the cell count against `--max-images`), then queued as an ordinary job one
//! after another, and the grids are drawn from the results. The answer is A1111's: `images` is
//! the grid, then the grid of each z value when `include_sub_grids`, then every cell when
//! `include_lone_images`, and `info.infotexts` lines up with it.

use std::sync::Arc;

use kiln_models::image::infotext::InfoText;
use kiln_models::image::infotext::PNG_KEYWORD;
use kiln_models::image::png::{decode_png, encode_png};
use kiln_models::image::RgbImage;
use kiln_models::pipeline::GenerationParams;
use kiln_models::xyz::{assemble, plan_cells, Axis, AxisKind, CellOutput, XyzPlot, SCRIPT_TITLE};
use serde_json::Value;

use super::jobs::{resolve_model, run};
use super::AppState;
use crate::catalog::ModelEntry;
use crate::error::{ApiError, ApiResult};
use crate::queue::{JobOutput, OutputImage};

const FIELD: &str = "script_args";

/// The name GET /sdapi/v1/scripts lists (A1111 lists script titles in lower case).
pub const SCRIPT_NAME: &str = "x/y/z plot";

/// Whether `script_name` names the X/Y/Z plot (any case).
pub fn is_xyz(script_name: &str) -> bool {
    script_name.trim().eq_ignore_ascii_case(SCRIPT_TITLE)
}

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

/// Checks the plot against the request, runs each cell through the queue and returns the
/// images (grid first) as one job's output. An interrupt stops the plot: its cells not yet run
/// are black and the answer says `interrupted`.
pub async fn run_xyz(
    state: &Arc<AppState>,
    req: XyzRequest,
    base: GenerationParams,
    model: ModelEntry,
) -> ApiResult<JobOutput> {
    let plot = &req.plot;
    if base.batch_size != 1 || base.batch_count != 1 {
        return Err(ApiError::invalid(
            "batch_size",
            "the X/Y/Z plot makes one image per cell: batch_size and n_iter must be 1",
        ));
    }
    let max_images = state.config.max_images;
    if plot.cell_count() > max_images {
        return Err(ApiError::invalid(
            FIELD,
            format!(
                "the X/Y/Z plot has {} cells; this server makes at most {max_images} images per request",
                plot.cell_count()
            ),
        ));
    }
    let cells = plan_cells(plot, &base, state.config.max_pixels, "--max-pixels")
        .map_err(|e| ApiError::invalid(FIELD, e.to_string()))?;
    let mut jobs = Vec::with_capacity(cells.len());
    for (cell, settings) in cells {
        let steps = settings.params.steps;
        if steps > state.config.max_steps {
            return Err(ApiError::invalid(
                FIELD,
                format!(
                    "X/Y/Z plot: Steps value {steps} is over this server's --max-steps {}",
                    state.config.max_steps
                ),
            ));
        }
        let model = match &settings.checkpoint {
            Some(name) => resolve_model(state, name, FIELD)?,
            None => model.clone(),
        };
        jobs.push((cell, settings.params, model));
    }
    let mut outputs: Vec<Option<(CellOutput, u64)>> = vec![None; jobs.len()];
    let mut first: Option<JobOutput> = None;
    let mut stopped = false;
    for (cell, params, model) in jobs {
        let out = run(state, params, model, None, Vec::new()).await?;
        let image = out.images.first().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "no_image",
                "a plot cell gave no image",
            )
        })?;
        let png = decode_png(&image.png).map_err(internal)?;
        outputs[cell.index] = Some((
            CellOutput {
                image: png.image,
                info: InfoText::parse(&image.infotext),
            },
            image.seed,
        ));
        let interrupted = out.interrupted;
        if first.is_none() || cell.index == 0 {
            first = Some(JobOutput {
                images: Vec::new(),
                ..out
            });
        }
        if interrupted {
            // As A1111: the plot stops, the cells not run are black, the grid is still drawn.
            stopped = true;
            break;
        }
    }
    let mut meta = first.ok_or_else(|| ApiError::invalid(FIELD, "the plot has no cells"))?;
    meta.interrupted = stopped;
    let black = CellOutput {
        image: RgbImage {
            width: base.width,
            height: base.height,
            data: vec![0; base.width * base.height * 3],
        },
        info: InfoText::default(),
    };
    let outputs = outputs
        .into_iter()
        .map(|o| o.unwrap_or_else(|| (black.clone(), 0)));
    let (cells, seeds): (Vec<CellOutput>, Vec<u64>) = outputs.unzip();
    let plot = req.plot;
    let (lone, subs) = (req.include_lone_images, req.include_sub_grids);
    // Drawing and PNG encoding are CPU work: off the async threads.
    let images = tokio::task::spawn_blocking(move || -> ApiResult<Vec<OutputImage>> {
        let out = assemble(&plot, cells).map_err(internal)?;
        let grid_seed = seeds.first().copied().unwrap_or(0);
        let mut images = vec![output(&out.grid, &out.grid_info, grid_seed)?];
        if subs {
            for (iz, (g, info)) in out.sub_grids.iter().enumerate() {
                let seed = seeds.get(iz * plot.x.values.len() * plot.y.values.len());
                images.push(output(g, info, seed.copied().unwrap_or(grid_seed))?);
            }
        }
        if lone {
            for (c, seed) in out.cells.iter().zip(&seeds) {
                images.push(output(&c.image, &c.info, *seed)?);
            }
        }
        Ok(images)
    })
    .await
    .map_err(internal)??;
    meta.images = images;
    Ok(meta)
}

fn output(image: &RgbImage, info: &InfoText, seed: u64) -> ApiResult<OutputImage> {
    let infotext = info.format();
    let png = encode_png(image, &[(PNG_KEYWORD, &infotext)]).map_err(internal)?;
    Ok(OutputImage {
        seed,
        png,
        infotext,
    })
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

#[cfg(test)]
mod tests {
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
            false,
            false,
            0,
            true
        ]));
        let r = parse_script_args(&a, false, &mut || 5).unwrap();
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
