//! Recorded outputs: f32 tensors from safetensors files, the case lists beside them, and the error
//! measures the tests compare with.

use std::path::Path;

use kiln_models::pipeline::GeneratedImage;
use kiln_runtime::Device;
use safetensors::SafeTensors;
use serde_json::Value;

/// Little-endian f32 values from raw tensor bytes.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Tensor `name` of the safetensors file at `path`, read as f32: its shape and values.
pub fn read_f32(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    (t.shape().to_vec(), f32s(t.data()))
}

/// Every tensor of the safetensors file at `path`, read as f32: name, shape and values.
pub fn read_all_f32(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            let values = f32s(t.data());
            (name, t.shape().to_vec(), values)
        })
        .collect()
}

/// A fixture's JSON file; a missing one panics naming it and the script that writes it.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run the tools/make_*.py script that writes it",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// The `cases` array of a fixture's JSON file.
pub fn cases(path: &Path) -> Vec<Value> {
    read_json(path)["cases"].as_array().unwrap().clone()
}

/// A JSON array of numbers as f32 values.
pub fn json_f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The largest |got - want| over the pairs (a length mismatch is the caller's to check).
pub fn max_err(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max)
}

/// PSNR in dB of an image in [0, 1] against the reference.
pub fn psnr(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let mse = got
        .iter()
        .zip(want)
        .map(|(g, w)| (f64::from(*g) - f64::from(*w)).powi(2))
        .sum::<f64>()
        / got.len() as f64;
    10.0 * (1.0 / mse).log10()
}

/// The pixels of every image, one after another, as the goldens store a batch.
pub fn pixels(images: &[GeneratedImage]) -> Vec<f32> {
    images.iter().flat_map(|i| i.pixels.clone()).collect()
}

/// Asserts a generation's images are the golden batch (`shape`, `want`) within `tol` max |error|.
pub fn assert_images_match(
    device: &Device,
    name: &str,
    images: &[GeneratedImage],
    (shape, want): (Vec<usize>, Vec<f32>),
    tol: f32,
) {
    assert_eq!(images.len(), shape[0], "{name}: image count");
    let got = pixels(images);
    assert_eq!(got.len(), want.len(), "{name}: pixel count");
    assert_within(device, name, max_err(&got, &want), tol);
}

/// Reports case `name`'s max |error| on `device` and asserts it is at most `tol`.
pub fn assert_within(device: &Device, name: &str, err: f32, tol: f32) {
    eprintln!("{} {name}: max |err| {err:e}", device.name());
    assert!(
        err <= tol,
        "{} {name}: max |err| {err} > {tol}",
        device.name()
    );
}

/// As `max_err`, after asserting that the lengths match.
pub fn checked_max_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    max_err(got, want)
}
