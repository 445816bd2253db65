//! Image files (PNG, JPEG, WebP) to 8-bit RGB, transparent pixels composited onto white as
//! mistral-common's `_convert_to_rgb` does (PIL `paste` with the alpha as mask).

use std::hash::{DefaultHasher, Hasher};

use kiln_runtime::{Error, Result};

/// Largest decoded image accepted (width x height): 64 megapixels, far above the 1540 x 1540 the
/// model sees, and small enough that a hostile file cannot exhaust memory.
pub const MAX_DECODED_PIXELS: u64 = 64 << 20;

/// A decoded image: `rgb` is `height x width x 3` bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedImage {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    /// A hash of the decoded pixels and size: two prompts share a cached image only when equal.
    pub hash: u64,
}

/// Decodes `bytes` (PNG, JPEG or WebP; the format is sniffed from the content). `what` names the
/// input in errors (a file path, "messages[0].content[1]").
pub fn decode_image(bytes: &[u8], what: &str) -> Result<DecodedImage> {
    let op = "decode image";
    let format = image::guess_format(bytes).map_err(|_| {
        Error::shape(
            op,
            format!(
                "{what}: not a PNG, JPEG or WebP image ({} bytes)",
                bytes.len()
            ),
        )
    })?;
    if !matches!(
        format,
        image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP
    ) {
        return Err(Error::shape(
            op,
            format!("{what}: {format:?} images are not supported (PNG, JPEG or WebP)"),
        ));
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_PIXELS * 8);
    reader.limits(limits);
    let (width, height) = reader.into_dimensions().map_err(|e| {
        Error::shape(
            op,
            format!("{what}: cannot read the {format:?} header: {e}"),
        )
    })?;
    if width == 0 || height == 0 || width as u64 * height as u64 > MAX_DECODED_PIXELS {
        return Err(Error::limit(
            op,
            format!(
                "{what}: {width}x{height} pixels (at most {MAX_DECODED_PIXELS} pixels, none empty)"
            ),
        ));
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_PIXELS * 8);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| {
        Error::shape(
            op,
            format!("{what}: cannot decode the {format:?} image: {e}"),
        )
    })?;
    let rgb = if decoded.color().has_alpha() {
        onto_white(&decoded.to_rgba8())
    } else {
        decoded.to_rgb8().into_raw()
    };
    let mut hasher = DefaultHasher::new();
    hasher.write_u32(width);
    hasher.write_u32(height);
    hasher.write(&rgb);
    Ok(DecodedImage {
        width,
        height,
        rgb,
        hash: hasher.finish(),
    })
}

/// PIL's `paste(image, mask=alpha)` onto opaque white: `(255 * (255 - a) + c * a) / 255`,
/// rounded as PIL's integer blend does.
fn onto_white(rgba: &image::RgbaImage) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.width() as usize * rgba.height() as usize * 3);
    for px in rgba.pixels() {
        let a = px[3] as u32;
        for &c in &px.0[..3] {
            let t = 255 * (255 - a) + c as u32 * a + 128;
            out.push(((t + (t >> 8)) >> 8) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(img: image::DynamicImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
        bytes
    }

    #[test]
    fn transparent_pixels_become_white_and_opaque_keep_their_colour() {
        let mut img = image::RgbaImage::new(3, 1);
        img.put_pixel(0, 0, image::Rgba([10, 20, 30, 0]));
        img.put_pixel(1, 0, image::Rgba([10, 20, 30, 255]));
        img.put_pixel(2, 0, image::Rgba([0, 100, 200, 128]));
        let d = decode_image(&png(image::DynamicImage::ImageRgba8(img)), "t").unwrap();
        assert_eq!((d.width, d.height), (3, 1));
        // Half-transparent: (255 * 127 + c * 128) / 255 rounded.
        assert_eq!(d.rgb, vec![255, 255, 255, 10, 20, 30, 127, 177, 227]);
    }

    #[test]
    fn bad_bytes_and_truncated_files_are_named_errors() {
        let err = decode_image(b"hello world", "part 2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("part 2") && err.contains("not a PNG"), "{err}");
        let full = png(image::DynamicImage::ImageRgb8(image::RgbImage::new(40, 40)));
        let err = decode_image(&full[..full.len() / 2], "cut.png")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cut.png"), "{err}");
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
        let err = decode_image(gif, "g").unwrap_err().to_string();
        assert!(err.contains("Gif") || err.contains("not a PNG"), "{err}");
    }

    #[test]
    fn equal_pixels_hash_equal_and_different_pixels_differ() {
        let a = png(image::DynamicImage::ImageRgb8(image::RgbImage::new(4, 4)));
        let mut other = image::RgbImage::new(4, 4);
        other.put_pixel(1, 1, image::Rgb([1, 0, 0]));
        let b = png(image::DynamicImage::ImageRgb8(other));
        let (a1, a2, b1) = (
            decode_image(&a, "a").unwrap(),
            decode_image(&a, "a").unwrap(),
            decode_image(&b, "b").unwrap(),
        );
        assert_eq!(a1.hash, a2.hash);
        assert_ne!(a1.hash, b1.hash);
    }
}
