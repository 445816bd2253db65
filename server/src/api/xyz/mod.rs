//! `script_name: "x/y/z plot"` on txt2img / img2img: A1111's X/Y/Z plot script with its
//! positional `script_args` (`args.rs`). Every cell is checked first (axes, checkpoints, the grid
//! against `--max-pixels`, the cell count against `--max-images`), then queued as an ordinary
//! job one after another, each with the request's refiner and ControlNet units as the single
//! generation would run them, and the grids are drawn from the results. The answer is A1111's:
//! `images` is the grid, then the grid of each z value when `include_sub_grids`, then every cell
//! when `include_lone_images`, and `info.infotexts` lines up with it.

mod args;

use std::sync::Arc;

use kiln_models::image::infotext::InfoText;
use kiln_models::image::infotext::PNG_KEYWORD;
use kiln_models::image::png::{decode_png, encode_png};
use kiln_models::image::RgbImage;
use kiln_models::pipeline::GenerationParams;
use kiln_models::xyz::{assemble, plan_cells, Cell, CellOutput, SCRIPT_TITLE};

use super::jobs::{resolve_model, run};
use super::AppState;
use crate::catalog::ModelEntry;
use crate::controlnets::ControlRequest;
use crate::error::{ApiError, ApiResult};
use crate::queue::{JobOutput, OutputImage};
pub use args::{parse_script_args, XyzRequest};

const FIELD: &str = "script_args";

/// The name GET /sdapi/v1/scripts lists (A1111 lists script titles in lower case).
pub const SCRIPT_NAME: &str = "x/y/z plot";

/// Whether `script_name` names the X/Y/Z plot (any case).
pub fn is_xyz(script_name: &str) -> bool {
    script_name.trim().eq_ignore_ascii_case(SCRIPT_TITLE)
}

/// What every cell runs with besides its own settings: the request's model (unless a
/// Checkpoint name cell names another), refiner and ControlNet units. The worker loads the
/// units for each cell's model, so a checkpoint cell gets ControlNets opened for that checkpoint.
pub struct CellJob {
    pub model: ModelEntry,
    pub refiner: Option<(ModelEntry, f64)>,
    pub controls: Vec<ControlRequest>,
}

/// Checks the plot against the request, runs each cell through the queue and returns the
/// images (grid first) as one job's output. An interrupt stops the plot: its cells not yet run
/// are black and the answer says `interrupted`.
pub async fn run_xyz(
    state: &Arc<AppState>,
    req: XyzRequest,
    base: GenerationParams,
    job: CellJob,
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
            None => job.model.clone(),
        };
        jobs.push((cell, settings.params, model, settings.checkpoint));
    }
    let mut outputs: Vec<Option<(CellOutput, u64)>> = vec![None; jobs.len()];
    let mut first: Option<JobOutput> = None;
    let mut stopped = false;
    for (cell, params, model, checkpoint) in jobs {
        let out = run(
            state,
            params,
            model,
            job.refiner.clone(),
            job.controls.clone(),
        )
        .await
        .map_err(|e| in_cell(e, cell, checkpoint.as_deref()))?;
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
    // A cell not run is black at the size of those that ran (A1111 takes the first image's).
    let (width, height) = outputs
        .iter()
        .flatten()
        .next()
        .map_or((base.width, base.height), |(c, _)| {
            (c.image.width, c.image.height)
        });
    let black = CellOutput {
        image: RgbImage {
            width,
            height,
            data: vec![0; width * height * 3],
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
        // A1111 returns one sub grid per z value (one even without a Z axis) when asked.
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

/// A cell's client error says which cell (and checkpoint) it came from: a ControlNet unit that
/// fits the request's model may not fit a Checkpoint name cell's.
fn in_cell(mut e: ApiError, cell: Cell, checkpoint: Option<&str>) -> ApiError {
    if e.status.is_client_error() {
        let on = checkpoint.map_or(String::new(), |c| format!(" (checkpoint {c:?})"));
        e.detail = format!(
            "X/Y/Z plot cell x {} y {} z {}{on}: {}",
            cell.ix + 1,
            cell.iy + 1,
            cell.iz + 1,
            e.detail
        );
    }
    e
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
