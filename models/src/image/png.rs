//! PNG files with text chunks, as A1111 writes its `parameters` infotext: a `tEXt` chunk when the
//! text is Latin-1 (PNG's tEXt encoding), else an `iTXt` chunk (UTF-8), as PIL's `add_text` does.

use super::{ImageError, RgbImage};

/// Encodes `img` as an 8-bit RGB PNG with the given `(keyword, text)` chunks before the image data.
pub fn encode_png(img: &RgbImage, text: &[(&str, &str)]) -> Result<Vec<u8>, ImageError> {
    let img = RgbImage::new(img.width, img.height, img.data.clone())?;
    let enc = |e: png::EncodingError| ImageError::Encode(e.to_string());
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, img.width as u32, img.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        for (keyword, value) in text {
            if is_latin1(value) {
                encoder
                    .add_text_chunk(keyword.to_string(), value.to_string())
                    .map_err(enc)?;
            } else {
                encoder
                    .add_itxt_chunk(keyword.to_string(), value.to_string())
                    .map_err(enc)?;
            }
        }
        let mut writer = encoder.write_header().map_err(enc)?;
        writer.write_image_data(&img.data).map_err(enc)?;
        writer.finish().map_err(enc)?;
    }
    Ok(out)
}

/// A decoded PNG: the image as 8-bit RGB and its text chunks (tEXt, zTXt and iTXt) in file order
/// per kind.
pub struct DecodedPng {
    pub image: RgbImage,
    pub text: Vec<(String, String)>,
}

impl DecodedPng {
    /// The text of the first chunk with `keyword`.
    pub fn text(&self, keyword: &str) -> Option<&str> {
        self.text
            .iter()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes an 8-bit RGB or RGBA PNG (what kiln writes; other layouts are converted to RGB).
pub fn decode_png(bytes: &[u8]) -> Result<DecodedPng, ImageError> {
    let dec = |e: png::DecodingError| ImageError::Decode(e.to_string());
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(dec)?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let frame = reader.next_frame(&mut buf).map_err(dec)?;
    buf.truncate(frame.buffer_size());
    let (w, h) = (frame.width as usize, frame.height as usize);
    let data = match frame.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        png::ColorType::Indexed => {
            return Err(ImageError::Decode("palette not expanded".into()));
        }
    };
    // The text chunks after the image data are read by finishing the stream.
    reader.finish().map_err(dec)?;
    let info = reader.info();
    let mut text: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for c in &info.compressed_latin1_text {
        let value = c
            .get_text()
            .map_err(|e| ImageError::Decode(e.to_string()))?;
        text.push((c.keyword.clone(), value));
    }
    for c in &info.utf8_text {
        let value = c
            .get_text()
            .map_err(|e| ImageError::Decode(e.to_string()))?;
        text.push((c.keyword.clone(), value));
    }
    Ok(DecodedPng {
        image: RgbImage::new(w, h, data)?,
        text,
    })
}

fn is_latin1(s: &str) -> bool {
    s.chars().all(|c| (c as u32) < 256)
}
