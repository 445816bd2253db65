//! A1111's X/Y/Z plot script: up to three axes of settings, one generation per combination, and
//! the labelled grid of the results (`scripts/xyz_grid.py`). Shared by `kiln generate --xyz` and
//! the server's `script_name: "x/y/z plot"`; each supplies a [`CellRunner`] that generates one
//! cell with the model it names.

mod axis;
mod plot;
mod run;
pub mod values;

pub use axis::{axis_labels, AxisKind, ValueType};
pub use plot::{Axis, AxisValue, Cell, CellSettings, XyzPlot};
pub use run::{
    assemble, check_grid_size, grid_size, plan_cells, run_plot, CellOutput, CellRunner, XyzOutput,
};

/// A1111's script title; `script_name` matches it in any case.
pub const SCRIPT_TITLE: &str = "X/Y/Z plot";

#[derive(Debug, thiserror::Error)]
pub enum XyzError {
    #[error("X/Y/Z plot: unknown axis type {0}")]
    UnknownAxis(String),
    #[error("X/Y/Z plot: the axis type \"{0}\" is not supported by kiln")]
    UnsupportedAxis(String),
    #[error("X/Y/Z plot: {axis} value {value:?}: {why}")]
    Value {
        axis: String,
        value: String,
        why: String,
    },
    #[error("X/Y/Z plot: {axis} has no values")]
    NoValues { axis: String },
    #[error("X/Y/Z plot: {0}")]
    Unavailable(String),
    #[error(
        "X/Y/Z plot: the grid of {cells} cells of {cell_width}x{cell_height} would be \
         {width}x{height} = {pixels} pixels, over the limit of {max} ({limit_name})"
    )]
    TooLarge {
        cells: String,
        cell_width: usize,
        cell_height: usize,
        width: usize,
        height: usize,
        pixels: usize,
        max: usize,
        limit_name: String,
    },
    #[error("X/Y/Z plot: {0}")]
    Image(#[from] crate::image::ImageError),
    #[error("X/Y/Z plot cell {cell}: {message}")]
    Cell { cell: String, message: String },
}

impl XyzError {
    pub(crate) fn value(axis: &str, value: &str, why: &str) -> XyzError {
        XyzError::Value {
            axis: axis.to_string(),
            value: value.to_string(),
            why: why.to_string(),
        }
    }
}

/// The hires-fix axes without a hires fix to vary: "Hires upscaler", and "Denoising" on a
/// txt2img plot (where A1111 applies it to the hires pass).
pub fn hires_fix_unavailable(axis: AxisKind) -> XyzError {
    XyzError::Unavailable(format!(
        "the {} axis varies the hires fix: enable it (--hr-scale / --hr-resize, or enable_hr)",
        axis.label()
    ))
}
