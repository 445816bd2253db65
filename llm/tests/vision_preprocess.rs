//! Image preprocessing against mistral-common 1.13.1 on tests/fixtures/llm/vision (made by
//! tools/make_vision_preprocess_fixtures.py; cv2 5.1.0 x86-64 wheel, whose bicubic runs Intel IPP):
//! grids under both size rules (417 sizes, .5 ties among them), token ids, normalised pixels, and
//! the decode of every input file against PIL's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_llm::vision::{
    decode_image, image_token_layout, DecodedImage, ImageProcessor, ImageTokenIds, SizeRounding,
    CLIP_MEAN, CLIP_STD,
};
use kiln_llm::Tokenizer;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Largest |kiln - mistral-common| allowed on normalised pixels (values span about -2.6..3.0).
/// Measured: at most 1.4e-6 (a few f32 ulps: IPP sums the taps in another order).
const PIXEL_TOL: f32 = 1e-5;

const IDS: ImageTokenIds = ImageTokenIds {
    img: 10,
    brk: 12,
    end: 13,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/vision")
}

fn meta() -> Value {
    let text = std::fs::read_to_string(dir().join("preprocess_golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tensors() -> Vec<u8> {
    std::fs::read(dir().join("preprocess_golden.safetensors")).unwrap()
}

fn tensor<'a>(st: &'a SafeTensors, name: &str, dtype: Dtype) -> (&'a [u8], Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), dtype, "{name}");
    (t.data(), t.shape().to_vec())
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let (data, shape) = tensor(st, name, Dtype::F32);
    let v = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (v, shape)
}

fn tokens(st: &SafeTensors, name: &str) -> Vec<u32> {
    let (data, _) = tensor(st, name, Dtype::I64);
    data.chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect()
}

/// PIL's decode (after mistral-common's `_convert_to_rgb`) as a DecodedImage.
fn pil_rgb(st: &SafeTensors, name: &str) -> DecodedImage {
    let (data, shape) = tensor(st, &format!("{name}.rgb"), Dtype::U8);
    assert_eq!(shape[2], 3);
    DecodedImage {
        width: shape[1] as u32,
        height: shape[0] as u32,
        rgb: data.to_vec(),
        hash: 0,
    }
}

fn cases() -> Vec<Value> {
    meta()["cases"].as_array().unwrap().clone()
}

fn num(v: &Value, key: &str) -> usize {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}")) as usize
}

fn processor(case: &Value) -> ImageProcessor {
    ImageProcessor {
        patch_size: num(case, "patch_size"),
        merge: num(case, "merge"),
        longest_edge: num(case, "max_image_size"),
        rounding: SizeRounding::MistralCommon,
    }
}

fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// The generator's integer pattern: (7x + 13y + 85c + (x*y >> 5) + ((x ^ y) & 63)) mod 256.
fn synthetic_pattern(w: usize, h: usize) -> DecodedImage {
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = 7 * x + 13 * y + 85 * c + ((x * y) >> 5) + ((x ^ y) & 63);
                rgb.push((v % 256) as u8);
            }
        }
    }
    DecodedImage {
        width: w as u32,
        height: h as u32,
        rgb,
        hash: 0,
    }
}

#[test]
fn grids_match_mistral_common_and_transformers() {
    let meta = meta();
    let table = meta["grids"].as_array().unwrap();
    assert!(table.len() > 400, "{} entries", table.len());
    let (mut ties, mut differ) = (0, 0);
    for g in table {
        let (w, h, m) = (
            num(g, "width") as u32,
            num(g, "height") as u32,
            num(g, "max_image_size"),
        );
        let mc = ImageProcessor {
            longest_edge: m,
            ..Default::default()
        };
        let tf = ImageProcessor {
            rounding: SizeRounding::Transformers,
            ..mc.clone()
        };
        let want = (num(g, "rows"), num(g, "cols"));
        assert_eq!(mc.grid(w, h).unwrap(), want, "mistral-common {g}");
        let want_tf = (num(g, "transformers_rows"), num(g, "transformers_cols"));
        if want_tf.0 == 0 || want_tf.1 == 0 {
            assert!(tf.grid(w, h).is_err(), "transformers {g}");
        } else {
            assert_eq!(tf.grid(w, h).unwrap(), want_tf, "transformers {g}");
        }
        differ += usize::from(want != want_tf);
        let ratio = w.max(h) as f64 / m as f64;
        let short = w.min(h) as f64 / ratio;
        ties += usize::from(ratio > 1.0 && short.fract() == 0.5);
    }
    // The table covers .5 ties and sizes where the two rules part.
    assert!(ties >= 20 && differ >= 20, "{ties} ties, {differ} differ");
}

#[test]
fn token_ids_and_grids_match_each_case() {
    let bytes = tensors();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let p = processor(&case);
        let grid = p
            .grid(
                num(&case, "source_width") as u32,
                num(&case, "source_height") as u32,
            )
            .unwrap();
        assert_eq!(grid, (num(&case, "rows"), num(&case, "cols")), "{name}");
        let want = tokens(&st, &format!("{name}.tokens"));
        assert_eq!(image_token_layout(grid.0, grid.1, IDS), want, "{name}");
    }
}

#[test]
fn pixels_match_mistral_common_on_pil_decoded_inputs() {
    let bytes = tensors();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut worst = 0f32;
    for case in cases().iter().filter(|c| c["file"].is_string()) {
        let name = case["name"].as_str().unwrap();
        let image = pil_rgb(&st, name);
        let out = processor(case).process(&image).unwrap();
        let (want, shape) = f32s(&st, &format!("{name}.pixels"));
        assert_eq!(shape, [3, out.height, out.width], "{name}");
        assert_eq!((out.rows, out.cols), (num(case, "rows"), num(case, "cols")));
        let d = max_abs_diff(&out.pixels, &want);
        eprintln!("{name}: max |kiln - mistral-common| = {d:.2e}");
        assert!(d <= PIXEL_TOL, "{name}: {d}");
        worst = worst.max(d);
        // The trap: upscaled small images overshoot 0..255 before normalising.
        let (lo, hi) = (case["min"].as_f64().unwrap(), case["max"].as_f64().unwrap());
        let (got_lo, got_hi) = out
            .pixels
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!((got_lo as f64 - lo).abs() < 1e-4 && (got_hi as f64 - hi).abs() < 1e-4);
    }
    eprintln!("worst over the file cases: {worst:.2e}");
}

#[test]
fn small_upscaled_image_overshoots_the_byte_range() {
    let bytes = tensors();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let out = ImageProcessor::default()
        .process(&pil_rgb(&st, "small_37x23"))
        .unwrap();
    // Channel 0 of a pixel value v normalises to (v / 255 - mean) / std: below 0 or above 255
    // shows up as below -mean/std or above (1 - mean)/std.
    let (mean, std) = (CLIP_MEAN[0], CLIP_STD[0]);
    let plane = &out.pixels[..out.height * out.width];
    assert!(plane.iter().any(|&v| v < -mean / std - 0.01));
    assert!(plane.iter().any(|&v| v > (1.0 - mean) / std + 0.01));
}

#[test]
fn large_synthetic_images_match_and_resize_fast() {
    let bytes = tensors();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for case in cases()
        .iter()
        .filter(|c| c["synthetic"].as_bool() == Some(true))
    {
        let name = case["name"].as_str().unwrap();
        let image = synthetic_pattern(num(case, "source_width"), num(case, "source_height"));
        let t = Instant::now();
        let out = processor(case).process(&image).unwrap();
        let took = t.elapsed();
        let (want, shape) = f32s(&st, &format!("{name}.pixels"));
        let got: Vec<f32> = match case["rows_kept"].as_array() {
            None => out.pixels.clone(),
            Some(rows) => {
                let rows: Vec<usize> = rows.iter().map(|r| r.as_u64().unwrap() as usize).collect();
                assert_eq!(shape, [3, rows.len(), out.width]);
                let plane = out.height * out.width;
                (0..3)
                    .flat_map(|c| rows.iter().map(move |&r| (c, r)))
                    .flat_map(|(c, r)| {
                        let start = c * plane + r * out.width;
                        out.pixels[start..start + out.width].to_vec()
                    })
                    .collect()
            }
        };
        let d = max_abs_diff(&got, &want);
        eprintln!(
            "{name}: {}x{} -> {}x{} in {took:?}, max |kiln - mistral-common| = {d:.2e}",
            image.width, image.height, out.width, out.height
        );
        assert!(d <= PIXEL_TOL, "{name}: {d}");
    }
    // A 4000 x 3000 photo down to 1540 x 1176 on one core.
    let image = synthetic_pattern(4000, 3000);
    let t = Instant::now();
    let out = ImageProcessor::default().process(&image).unwrap();
    let took = t.elapsed();
    eprintln!("4000x3000 -> {}x{} in {took:?}", out.width, out.height);
    assert_eq!((out.rows, out.cols), (42, 55));
    assert!(took.as_secs_f64() < 5.0, "{took:?}");
}

/// PIL (libjpeg-turbo, libwebp) against the image crate (zune-jpeg, image-webp): PNG and WebP
/// (lossy and lossless) decode identically; JPEG does not (see [`JPEG_DECODE_TOL`]).
#[test]
fn decode_matches_pil() {
    let bytes = tensors();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for case in cases().iter().filter(|c| c["file"].is_string()) {
        let name = case["name"].as_str().unwrap();
        let file = case["file"].as_str().unwrap();
        let data = std::fs::read(dir().join(file)).unwrap();
        let got = decode_image(&data, file).unwrap();
        let want = pil_rgb(&st, name);
        assert_eq!((got.width, got.height), (want.width, want.height), "{file}");
        let d = got
            .rgb
            .iter()
            .zip(&want.rgb)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        let jpeg = file.ends_with(".jpg");
        let differing = got
            .rgb
            .iter()
            .zip(&want.rgb)
            .filter(|(a, b)| a != b)
            .count();
        eprintln!(
            "{file} ({}): max decode difference {d} levels, {differing} of {} values differ",
            case["pil_mode"],
            got.rgb.len()
        );
        if jpeg {
            assert!(d <= JPEG_DECODE_TOL, "{file}: {d}");
        } else {
            assert_eq!(d, 0, "{file}");
        }
        // End to end from kiln's decode.
        let out = processor(case).process(&got).unwrap();
        let (want_px, _) = f32s(&st, &format!("{name}.pixels"));
        let dp = max_abs_diff(&out.pixels, &want_px);
        eprintln!("{file}: end-to-end max pixel difference {dp:.2e}");
        if jpeg {
            assert!(dp <= JPEG_PIXEL_TOL, "{file}: {dp}");
        } else {
            assert!(dp <= PIXEL_TOL, "{file}: {dp}");
        }
    }
}

/// Largest per-channel difference between kiln's (zune-jpeg) and PIL's (libjpeg-turbo, islow IDCT,
/// fancy upsampling) decode of the same JPEG, in levels. The decoders round differently at each
/// stage: grayscale files already differ by 1 (IDCT), 4:4:4 colour by 2 (plus YCbCr to RGB), 4:2:0
/// by 3 (plus chroma upsampling); about a quarter of the values of the 4:2:0 fixture differ.
const JPEG_DECODE_TOL: u8 = 3;

/// What 3 levels can become after the resize and normalisation: 3 / 255 / std (0.261) times the
/// bicubic kernel's largest gain, sum |w| = 1.375 per axis (at half-pixel offsets), squared: 0.085.
/// Measured 0.048 on the fixture.
const JPEG_PIXEL_TOL: f32 = 0.09;

#[test]
fn image_token_ids_from_the_tekken_tokenizer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/tokenizer");
    for file in ["tekken.json", "tokenizer.json"] {
        let t = Tokenizer::from_file(&dir.join(file)).unwrap();
        assert_eq!(ImageTokenIds::from_tokenizer(&t), Some(IDS), "{file}");
    }
}
