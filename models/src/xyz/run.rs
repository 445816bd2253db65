//! Running a plot: every cell through the caller's [`CellRunner`], then A1111's grids (one per
//! z value, and the grid of those with the z labels on top).

use super::plot::{Cell, CellSettings, XyzPlot};
use super::{AxisKind, XyzError};
use crate::image::grid::{image_grid, Annotations};
use crate::image::infotext::InfoText;
use crate::image::RgbImage;
use crate::pipeline::GenerationParams;

/// One generated cell with its own infotext.
#[derive(Clone, Debug)]
pub struct CellOutput {
    pub image: RgbImage,
    pub info: InfoText,
}

/// What the CLI and the server load and generate with: a plot is independent of how a model is
/// found or held.
pub trait CellRunner {
    /// Refuses a Checkpoint-name value it cannot load, before any cell runs.
    fn check_checkpoint(&mut self, name: &str) -> Result<(), String>;
    /// Generates one image with these settings, with the checkpoint named (if any), else the
    /// run's own model.
    fn generate(&mut self, settings: &CellSettings) -> Result<CellOutput, String>;
}

/// A plot's images as A1111 returns them: the main grid, one grid per z value, every cell.
#[derive(Clone, Debug)]
pub struct XyzOutput {
    pub grid: RgbImage,
    pub grid_info: InfoText,
    pub sub_grids: Vec<(RgbImage, InfoText)>,
    /// In index order: x fastest, then y, then z.
    pub cells: Vec<CellOutput>,
}

/// The layouts of a sub grid (x by y cells) and of the main grid (the sub grids side by side
/// under the z labels), or `None` without a legend.
fn layouts(
    plot: &XyzPlot,
    width: usize,
    height: usize,
) -> Result<Option<(Annotations, Annotations)>, XyzError> {
    if !plot.draw_legend {
        return Ok(None);
    }
    let sub = Annotations::layout(
        width,
        height,
        &plot.x.labels(),
        &plot.y.labels(),
        plot.margin,
    )?;
    let main = Annotations::layout(sub.width, sub.height, &plot.z.labels(), &[String::new()], 0)?;
    Ok(Some((sub, main)))
}

/// The size of the main grid for cells of `width` x `height`.
pub fn grid_size(plot: &XyzPlot, width: usize, height: usize) -> Result<(usize, usize), XyzError> {
    let (nx, ny, nz) = (
        plot.x.values.len(),
        plot.y.values.len(),
        plot.z.values.len(),
    );
    Ok(match layouts(plot, width, height)? {
        Some((_, main)) => (main.width, main.height),
        None => (nx * width * nz, ny * height),
    })
}

/// Refuses a grid over `max_pixels` (`limit_name` says which setting) naming the sizes.
pub fn check_grid_size(
    plot: &XyzPlot,
    width: usize,
    height: usize,
    max_pixels: usize,
    limit_name: &str,
) -> Result<(), XyzError> {
    let (gw, gh) = grid_size(plot, width, height)?;
    if gw.saturating_mul(gh) > max_pixels {
        return Err(XyzError::TooLarge {
            cells: format!(
                "{}x{}x{}",
                plot.x.values.len(),
                plot.y.values.len(),
                plot.z.values.len()
            ),
            cell_width: width,
            cell_height: height,
            width: gw,
            height: gh,
            pixels: gw * gh,
            max: max_pixels,
            limit_name: limit_name.to_string(),
        });
    }
    Ok(())
}

/// Checks everything (axes against `base`, checkpoints, the grid's size against `max_pixels`),
/// then generates every cell in A1111's order and draws the grids. `base.seed` must already be
/// fixed (no -1), as A1111 fixes it before the plot; seed axes are fixed by the caller too
/// ([`XyzPlot::fix_seeds`]).
pub fn run_plot(
    plot: &XyzPlot,
    base: &GenerationParams,
    runner: &mut dyn CellRunner,
    max_pixels: usize,
    limit_name: &str,
) -> Result<XyzOutput, XyzError> {
    for axis in [&plot.x, &plot.y, &plot.z] {
        if axis.kind == AxisKind::CheckpointName {
            for v in axis.value_texts() {
                runner
                    .check_checkpoint(&v)
                    .map_err(|why| XyzError::value("Checkpoint name", &v, &why))?;
            }
        }
    }
    let cells = plan_cells(plot, base, max_pixels, limit_name)?;
    let mut outputs: Vec<Option<CellOutput>> = vec![None; cells.len()];
    for (cell, s) in &cells {
        let out = runner.generate(s).map_err(|message| XyzError::Cell {
            cell: format!("x {} y {} z {}", cell.ix + 1, cell.iy + 1, cell.iz + 1),
            message,
        })?;
        outputs[cell.index] = Some(out);
    }
    assemble(plot, outputs.into_iter().flatten().collect())
}

/// Everything [`run_plot`] checks before its first cell (the axes against `base`, the grid's
/// size), then every cell with its settings in the order to run them. For a caller that runs
/// the cells itself (the server queues each one) and then calls [`assemble`].
pub fn plan_cells(
    plot: &XyzPlot,
    base: &GenerationParams,
    max_pixels: usize,
    limit_name: &str,
) -> Result<Vec<(Cell, CellSettings)>, XyzError> {
    plot.check(base)?;
    check_grid_size(plot, base.width, base.height, max_pixels, limit_name)?;
    // Every cell's settings first, so a value that cannot apply stops the plot before it starts.
    plot.cells()
        .into_iter()
        .map(|c| Ok((c, plot.cell_settings(base, c)?)))
        .collect()
}

/// The grids of every cell's output, given in index order (x fastest, then y, then z).
pub fn assemble(plot: &XyzPlot, cells: Vec<CellOutput>) -> Result<XyzOutput, XyzError> {
    let (nx, ny) = (plot.x.values.len(), plot.y.values.len());
    if cells.len() != plot.cell_count() {
        return Err(XyzError::Unavailable(format!(
            "{} images for {} cells",
            cells.len(),
            plot.cell_count()
        )));
    }
    let first = &cells[0].image;
    let layout = layouts(plot, first.width, first.height)?;
    let mut sub_grids = Vec::new();
    for chunk in cells.chunks(nx * ny) {
        let images: Vec<RgbImage> = chunk.iter().map(|c| c.image.clone()).collect();
        let mut grid = image_grid(&images, ny)?;
        if let Some((sub, _)) = &layout {
            grid = sub.draw(&grid)?;
        }
        let mut info = chunk[0].info.clone();
        info.params.extend(plot.script_fields(false));
        sub_grids.push((grid, info));
    }
    let subs: Vec<RgbImage> = sub_grids.iter().map(|(g, _)| g.clone()).collect();
    let mut grid = image_grid(&subs, 1)?;
    if let Some((_, main)) = &layout {
        grid = main.draw(&grid)?;
    }
    let mut grid_info = cells[0].info.clone();
    grid_info.params.extend(plot.script_fields(true));
    Ok(XyzOutput {
        grid,
        grid_info,
        sub_grids,
        cells,
    })
}
