//! A1111's "Outpainting mk2" script on img2img (`script_name` "outpainting mk2", `script_args`
//! `[info, pixels, mask_blur, directions, noise_q, color_variation]`): the init image extended by
//! `pixels` towards each direction ("left", "right", "up", "down"), the border inpainted and the
//! seam blended over `mask_blur` pixels (`pipeline::Outpaint`). kiln extends every direction in
//! one pass and pre-fills the border by stretching the edge pixels; A1111 runs horizontal and
//! vertical passes and fills with shaped noise (`noise_q`, `color_variation`, read and unused).

use kiln_models::image::infotext::PNG_KEYWORD;
use kiln_models::image::png::{decode_png, encode_png};
use kiln_models::image::RgbImage;
use kiln_models::pipeline::{GenerationParams, Outpaint};
use serde_json::Value;

use crate::config::ServerConfig;
use crate::error::{ApiError, ApiResult};
use crate::queue::JobOutput;

pub fn is_mk2(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("outpainting mk2")
}

/// The original image and its place, for blending the results.
pub struct Outpainting {
    sides: Outpaint,
    original: RgbImage,
    x: usize,
    y: usize,
}

/// Puts `params`' init image on its outpainting canvas (with the border mask) and sizes the run
/// to it.
pub fn prepare(
    params: &mut GenerationParams,
    args: &[Value],
    config: &ServerConfig,
) -> ApiResult<Outpainting> {
    let field = |i: usize| format!("script_args[{i}]");
    let int = |i: usize, default: u64| -> ApiResult<usize> {
        match args.get(i) {
            None | Some(Value::Null) => Ok(default as usize),
            Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                ApiError::invalid(&field(i), format!("expected a whole number >= 0, got {v}"))
            }),
        }
    };
    let pixels = int(1, 128)?;
    let blur = int(2, 8)?;
    let directions: Vec<String> = match args.get(3) {
        None | Some(Value::Null) => ["left", "right", "up", "down"].map(String::from).to_vec(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|d| {
                let d = d.as_str().unwrap_or("").to_ascii_lowercase();
                match d.as_str() {
                    "left" | "right" | "up" | "down" => Ok(d),
                    _ => Err(ApiError::invalid(
                        &field(3),
                        format!("direction {d:?} is not left, right, up or down"),
                    )),
                }
            })
            .collect::<ApiResult<_>>()?,
        Some(v) => {
            return Err(ApiError::invalid(
                &field(3),
                format!("expected a list of directions, got {v}"),
            ))
        }
    };
    let side = |d: &str| {
        if directions.iter().any(|x| x == d) {
            pixels
        } else {
            0
        }
    };
    let spec = format!(
        "{},{},{},{}",
        side("left"),
        side("up"),
        side("right"),
        side("down")
    );
    let sides =
        Outpaint::parse(&spec, blur).map_err(|e| ApiError::invalid(&field(1), e.to_string()))?;
    let Some(init) = params.init.as_mut() else {
        return Err(ApiError::invalid(
            "init_images",
            "outpainting needs an init image",
        ));
    };
    let original = init.image.clone();
    let canvas = sides
        .canvas(&original, 8)
        .map_err(|e| ApiError::invalid("init_images", e.to_string()))?;
    let (w, h) = (canvas.image.width, canvas.image.height);
    if w * h > config.max_pixels {
        return Err(ApiError::invalid(
            &field(1),
            format!(
                "outpainting makes {w}x{h}, {} pixels; this server allows at most {} (--max-pixels)",
                w * h,
                config.max_pixels
            ),
        ));
    }
    init.image = canvas.image;
    init.mask = Some(canvas.mask);
    params.width = w;
    params.height = h;
    Ok(Outpainting {
        sides,
        original,
        x: canvas.x,
        y: canvas.y,
    })
}

impl Outpainting {
    /// Each result with the original laid back over it and the seam blended.
    pub fn blend(&self, out: &mut JobOutput) -> ApiResult<()> {
        for image in &mut out.images {
            let png = decode_png(&image.png).map_err(|e| ApiError::internal(e.to_string()))?;
            let blended = self
                .sides
                .blend_seam(&png.image, &self.original, self.x, self.y);
            image.png = encode_png(&blended, &[(PNG_KEYWORD, &image.infotext)])
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        Ok(())
    }
}
