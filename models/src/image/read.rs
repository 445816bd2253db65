//! Reading init images and masks (PNG, JPEG, BMP, WebP) and resizing them to the output size.

use std::path::Path;

use image::imageops::FilterType;

use super::{ImageError, RgbImage};

/// Reads an image file as 8-bit RGB. Alpha is dropped and grayscale expanded, as PIL's
/// `convert("RGB")` does; the format comes from the file's contents, not its name.
pub fn read_image(path: &Path) -> Result<RgbImage, ImageError> {
    let fail = |reason: String| ImageError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::open(path)
        .map_err(|e| fail(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    if reader.format().is_none() {
        return Err(fail(
            "not a PNG, JPEG, BMP or WebP image (unrecognised contents)".into(),
        ));
    }
    let rgb = reader.decode().map_err(|e| fail(e.to_string()))?.to_rgb8();
    let (w, h) = rgb.dimensions();
    RgbImage::new(w as usize, h as usize, rgb.into_raw())
}

/// Decodes an image held in memory (an uploaded init image or mask) as 8-bit RGB, with the same
/// conversions as [`read_image`]; `what` names it in errors.
pub fn decode_image(bytes: &[u8], what: &str) -> Result<RgbImage, ImageError> {
    let fail = |reason: String| ImageError::Read {
        path: what.into(),
        reason,
    };
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    if reader.format().is_none() {
        return Err(fail(
            "not a PNG, JPEG, BMP or WebP image (unrecognised contents)".into(),
        ));
    }
    let rgb = reader.decode().map_err(|e| fail(e.to_string()))?.to_rgb8();
    let (w, h) = rgb.dimensions();
    RgbImage::new(w as usize, h as usize, rgb.into_raw())
}

/// `img` scaled to `width` x `height` with a Lanczos-3 filter (diffusers resizes with PIL's
/// Lanczos; the two filters' results differ slightly). A copy if already that size.
pub fn resize(img: &RgbImage, width: usize, height: usize) -> Result<RgbImage, ImageError> {
    let img = RgbImage::new(img.width, img.height, img.data.clone())?;
    if img.width == width && img.height == height {
        return Ok(img);
    }
    let size = |what, len| ImageError::Size {
        what,
        width: img.width,
        height: img.height,
        len,
        expected: img.width * img.height * 3,
    };
    let buf = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
        .ok_or_else(|| size("image to resize", 0))?;
    let out = image::imageops::resize(&buf, width as u32, height as u32, FilterType::Lanczos3);
    RgbImage::new(width, height, out.into_raw())
}
