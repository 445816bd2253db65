//! Images in and out of the pipelines: 8-bit RGB and grayscale buffers, reading init images and
//! masks, PNG output with text chunks, and A1111's "infotext" (the `parameters` chunk).

pub mod grid;
pub mod infotext;
pub mod png;
mod read;

use std::path::PathBuf;

pub use read::{decode_image, read_image, resize};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("cannot encode PNG: {0}")]
    Encode(String),
    #[error("cannot decode PNG: {0}")]
    Decode(String),
    #[error("{what}: {width}x{height} image with {len} bytes (expected {expected})")]
    Size {
        what: &'static str,
        width: usize,
        height: usize,
        len: usize,
        expected: usize,
    },
}

/// 8-bit RGB, rows top to bottom, pixels interleaved (`data.len() == width * height * 3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<RgbImage, ImageError> {
        check_len("RGB image", width, height, data.len(), 3)?;
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }

    /// The luminance PIL's `convert("L")` computes (ITU-R 601-2 weights in 16-bit fixed point,
    /// rounded), which is what diffusers' mask processor sees.
    pub fn to_gray(&self) -> GrayImage {
        let data = self
            .data
            .chunks_exact(3)
            .map(|p| {
                let l = u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471;
                ((l + 0x8000) >> 16) as u8
            })
            .collect();
        GrayImage {
            width: self.width,
            height: self.height,
            data,
        }
    }
}

/// 8-bit single channel (masks), rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl GrayImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<GrayImage, ImageError> {
        check_len("grayscale image", width, height, data.len(), 1)?;
        Ok(GrayImage {
            width,
            height,
            data,
        })
    }
}

fn check_len(
    what: &'static str,
    width: usize,
    height: usize,
    len: usize,
    channels: usize,
) -> Result<(), ImageError> {
    let expected = width * height * channels;
    if len != expected || width == 0 || height == 0 {
        return Err(ImageError::Size {
            what,
            width,
            height,
            len,
            expected,
        });
    }
    Ok(())
}
