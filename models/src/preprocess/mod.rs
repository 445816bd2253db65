//! Control-image preprocessors that need no model, as the A1111 ControlNet extension names and
//! computes them: `none`, `invert`, `canny`, `threshold` and `scribble_xdog`. Each takes an RGB
//! image and returns an RGB one (single-channel maps replicated, as the extension's `HWC3` does).
//!
//! `apply_at` first scales the input to the extension's "processor resolution" (`resolution.rs`);
//! `apply` runs on the image as given. The pipeline then fits the map to the generation size in
//! the unit's resize mode (`fit.rs`).

mod canny;
mod fit;
mod gaussian;
mod resolution;
mod settings;
mod xdog;

use crate::image::{GrayImage, RgbImage};

pub use canny::canny;
pub use fit::{fit, ResizeMode};
pub use resolution::{pixel_perfect_resolution, processor_res, DEFAULT_RESOLUTION};
pub use settings::{PreprocessorSettings, Setting};
pub use xdog::scribble_xdog;

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("unknown ControlNet preprocessor {name:?} (known: {})", Preprocessor::names().join(", "))]
    Unknown { name: String },
    #[error("preprocessor {name}: {msg}")]
    Parameter { name: &'static str, msg: String },
}

/// One preprocessor with its parameters (the extension's `threshold_a` / `threshold_b` sliders).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Preprocessor {
    /// The image as given.
    None,
    /// `255 - x`: white-background line art to the black-background maps ControlNets expect.
    Invert,
    /// OpenCV's `cv2.Canny(image, low, high)` (3x3 Sobel, L1 gradient).
    Canny { low: f32, high: f32 },
    /// White where every channel is above the threshold.
    Threshold { threshold: f32 },
    /// Difference of Gaussians turned into a binary scribble.
    ScribbleXdog { threshold: f32 },
}

/// Names as the extension's `/controlnet/module_list` lists them, with the label it shows for
/// `invert` accepted too.
const NAMES: &[&str] = &["none", "invert", "canny", "threshold", "scribble_xdog"];
const INVERT_LABEL: &str = "invert (from white bg & black line)";

impl Preprocessor {
    pub fn names() -> &'static [&'static str] {
        NAMES
    }

    /// The preprocessor `name` with the extension's default parameters.
    pub fn from_name(name: &str) -> Result<Preprocessor, PreprocessError> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Preprocessor::None,
            "invert" | INVERT_LABEL => Preprocessor::Invert,
            "canny" => Preprocessor::Canny {
                low: 100.0,
                high: 200.0,
            },
            "threshold" | "binary" => Preprocessor::Threshold { threshold: 127.0 },
            "scribble_xdog" => Preprocessor::ScribbleXdog { threshold: 32.0 },
            _ => {
                return Err(PreprocessError::Unknown {
                    name: name.to_string(),
                })
            }
        })
    }

    /// `name` with the extension's `threshold_a` / `threshold_b` values (`None` or a negative
    /// value, which A1111 clients send for "unset", keeps the default).
    pub fn with_thresholds(
        name: &str,
        a: Option<f32>,
        b: Option<f32>,
    ) -> Result<Preprocessor, PreprocessError> {
        let given = |v: Option<f32>, default: f32| match v {
            Some(v) if v >= 0.0 => v,
            _ => default,
        };
        let p = match Preprocessor::from_name(name)? {
            Preprocessor::Canny { low, high } => Preprocessor::Canny {
                low: given(a, low),
                high: given(b, high),
            },
            Preprocessor::Threshold { threshold } => Preprocessor::Threshold {
                threshold: given(a, threshold),
            },
            Preprocessor::ScribbleXdog { threshold } => Preprocessor::ScribbleXdog {
                threshold: given(a, threshold),
            },
            p => p,
        };
        p.check()?;
        Ok(p)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Preprocessor::None => "none",
            Preprocessor::Invert => "invert",
            Preprocessor::Canny { .. } => "canny",
            Preprocessor::Threshold { .. } => "threshold",
            Preprocessor::ScribbleXdog { .. } => "scribble_xdog",
        }
    }

    fn check(&self) -> Result<(), PreprocessError> {
        let bad = |msg: String| {
            Err(PreprocessError::Parameter {
                name: self.name(),
                msg,
            })
        };
        match *self {
            Preprocessor::Canny { low, high } if !(low.is_finite() && high.is_finite()) => {
                bad(format!("thresholds must be numbers, got {low} and {high}"))
            }
            Preprocessor::Threshold { threshold } | Preprocessor::ScribbleXdog { threshold }
                if !threshold.is_finite() =>
            {
                bad(format!("threshold must be a number, got {threshold}"))
            }
            _ => Ok(()),
        }
    }

    /// Whether the preprocessor scales its input to a processor resolution first (the
    /// extension's none and invert do not).
    pub fn uses_resolution(&self) -> bool {
        !matches!(self, Preprocessor::None | Preprocessor::Invert)
    }

    /// The preprocessor as the extension runs it: on `img` scaled to short side `res` and
    /// padded to multiples of 64, the padding cropped off again.
    pub fn apply_at(&self, img: &RgbImage, res: usize) -> Result<RgbImage, PreprocessError> {
        if !self.uses_resolution() {
            return self.apply(img);
        }
        let (padded, w, h) = resolution::scale_and_pad(img, res)?;
        Ok(resolution::unpad(&self.apply(&padded)?, w, h))
    }

    /// The preprocessor on `img` at its own size.
    pub fn apply(&self, img: &RgbImage) -> Result<RgbImage, PreprocessError> {
        self.check()?;
        Ok(match *self {
            Preprocessor::None => img.clone(),
            Preprocessor::Invert => RgbImage {
                width: img.width,
                height: img.height,
                data: img.data.iter().map(|&v| 255 - v).collect(),
            },
            Preprocessor::Canny { low, high } => gray_to_rgb(&canny(img, low, high)),
            Preprocessor::Threshold { threshold } => gray_to_rgb(&threshold_min(img, threshold)),
            Preprocessor::ScribbleXdog { threshold } => gray_to_rgb(&scribble_xdog(img, threshold)),
        })
    }
}

/// 255 where the darkest channel is above `threshold`, else 0.
fn threshold_min(img: &RgbImage, threshold: f32) -> GrayImage {
    GrayImage {
        width: img.width,
        height: img.height,
        data: img
            .data
            .chunks_exact(3)
            .map(|p| {
                let min = p[0].min(p[1]).min(p[2]);
                if f32::from(min) > threshold {
                    255
                } else {
                    0
                }
            })
            .collect(),
    }
}

pub(crate) fn gray_to_rgb(g: &GrayImage) -> RgbImage {
    RgbImage {
        width: g.width,
        height: g.height,
        data: g.data.iter().flat_map(|&v| [v, v, v]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize, f: impl Fn(usize, usize) -> [u8; 3]) -> RgbImage {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend(f(x, y));
            }
        }
        RgbImage::new(w, h, data).unwrap()
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for name in Preprocessor::names() {
            assert_eq!(Preprocessor::from_name(name).unwrap().name(), *name);
        }
        assert_eq!(
            Preprocessor::from_name(INVERT_LABEL).unwrap(),
            Preprocessor::Invert
        );
        let err = Preprocessor::from_name("depth_midas")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("depth_midas") && err.contains("canny"),
            "{err}"
        );
    }

    #[test]
    fn thresholds_override_defaults_unless_unset() {
        let p = Preprocessor::with_thresholds("canny", Some(50.0), Some(-1.0)).unwrap();
        assert_eq!(
            p,
            Preprocessor::Canny {
                low: 50.0,
                high: 200.0
            }
        );
        let err =
            Preprocessor::with_thresholds("threshold", Some(f32::INFINITY), None).unwrap_err();
        assert!(err.to_string().contains("threshold"), "{err}");
    }

    #[test]
    fn invert_and_threshold_work_per_pixel() {
        let img = image(3, 2, |x, y| [(x * 100) as u8, (y * 200) as u8, 150]);
        let inv = Preprocessor::Invert.apply(&img).unwrap();
        assert!(img.data.iter().zip(&inv.data).all(|(a, b)| a + b == 255));
        let t = Preprocessor::Threshold { threshold: 99.0 }
            .apply(&img)
            .unwrap();
        // Only pixels whose darkest channel exceeds 99: x >= 1 and y = 1.
        let white: Vec<bool> = t.data.chunks(3).map(|p| p[0] == 255).collect();
        assert_eq!(white, [false, false, false, false, true, true]);
    }

    /// Columns holding an edge in any row of a canny map.
    fn edge_columns(map: &RgbImage) -> Vec<usize> {
        (0..map.width)
            .filter(|&x| (0..map.height).any(|y| map.data[(y * map.width + x) * 3] == 255))
            .collect()
    }

    #[test]
    fn canny_runs_at_the_processor_resolution() {
        // 32x16, black left of x = 16, white from it: one vertical step.
        let img = image(32, 16, |x, _| if x < 16 { [0; 3] } else { [255; 3] });
        let canny = Preprocessor::from_name("canny").unwrap();
        let native = canny.apply(&img).unwrap();
        assert_eq!((native.width, native.height), (32, 16));
        let cols = edge_columns(&native);
        assert!(
            !cols.is_empty() && cols.iter().all(|x| (15..=16).contains(x)),
            "{cols:?}"
        );
        // Short side 16 -> 64: four times the size, the step at x = 64.
        let scaled = canny.apply_at(&img, 64).unwrap();
        assert_eq!((scaled.width, scaled.height), (128, 64));
        let cols = edge_columns(&scaled);
        assert!(
            !cols.is_empty() && cols.iter().all(|x| (62..=65).contains(x)),
            "{cols:?}"
        );
        // Every row has the edge: the map was made at 64 rows, not stretched from 16.
        for y in 0..64 {
            assert!(
                (62..=65).any(|x| scaled.data[(y * 128 + x) * 3] == 255),
                "row {y}"
            );
        }
        // none and invert ignore the resolution.
        let inv = Preprocessor::Invert.apply_at(&img, 64).unwrap();
        assert_eq!((inv.width, inv.height), (32, 16));
    }
}
