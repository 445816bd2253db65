//! ControlNet preprocessors (A1111's "modules"): a control image made from an ordinary picture.
//! Only "none" here; the real set (canny, scribble, invert, threshold) replaces this file.

use crate::image::RgbImage;
use kiln_runtime::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preprocessor {
    /// The image is already a control image.
    None,
}

impl Preprocessor {
    pub fn from_name(name: &str) -> Result<Preprocessor> {
        match name {
            "none" | "None" => Ok(Preprocessor::None),
            other => Err(Error::shape(
                "preprocess",
                format!(
                    "unknown ControlNet preprocessor {other:?}: available are {}",
                    Preprocessor::names().join(", ")
                ),
            )),
        }
    }

    pub fn names() -> &'static [&'static str] {
        &["none"]
    }

    /// The name A1111 writes in its infotext.
    pub fn name(&self) -> &'static str {
        "none"
    }

    pub fn apply(&self, image: &RgbImage) -> Result<RgbImage> {
        match self {
            Preprocessor::None => Ok(image.clone()),
        }
    }
}
