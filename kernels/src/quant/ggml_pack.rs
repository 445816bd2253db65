//! Packing float matrices into the ggml block types llama.cpp's `llama-quantize` writes for kiln's
//! GGUF exports (q8_0, q4_0, q5_0, q4_K, q6_K), with ggml's reference quantisers bit for bit, so a
//! GGUF kiln writes holds the same bytes llama-quantize would write from the same floats.

use kiln_runtime::{Error, QuantFormat, Result};
use rayon::prelude::*;

use super::blocks::pack_block;
use super::formats::{q4_k, q5_0, q6_k};

/// The formats [`quantize_ggml`] packs.
pub const GGML_PACKABLE: [QuantFormat; 5] = [
    QuantFormat::Q8_0,
    QuantFormat::Q4_0,
    QuantFormat::Q5_0,
    QuantFormat::Q4K,
    QuantFormat::Q6K,
];

/// Packs the f32 values of an `[N, K]` matrix (row-major; any leading dimensions are rows) into
/// `format`'s ggml blocks, as ggml's `quantize_row_*_ref` does. K must be whole blocks.
pub fn quantize_ggml(format: QuantFormat, shape: &[usize], values: &[f32]) -> Result<Vec<u8>> {
    if !GGML_PACKABLE.contains(&format) {
        return Err(Error::dtype(
            "quantize_ggml",
            format!(
                "kiln does not write ggml {format} blocks (it writes {})",
                GGML_PACKABLE.map(QuantFormat::name).join(", ")
            ),
        ));
    }
    let k = shape.last().copied().unwrap_or(0);
    if k == 0 || !k.is_multiple_of(format.block_len()) {
        return Err(Error::shape(
            "quantize_ggml",
            format!(
                "{format} needs rows of whole {}-weight blocks; shape {shape:?}",
                format.block_len()
            ),
        ));
    }
    let n: usize = shape.iter().product();
    if values.len() != n {
        return Err(Error::shape(
            "quantize_ggml",
            format!("{} values for shape {shape:?}", values.len()),
        ));
    }
    let pack: fn(&[f32], &mut [u8]) = match format {
        QuantFormat::Q4K => q4_k::pack,
        QuantFormat::Q6K => q6_k::pack,
        QuantFormat::Q5_0 => q5_0::pack,
        QuantFormat::Q8_0 => |x, b| pack_block(QuantFormat::Q8_0, x, b),
        _ => |x, b| pack_block(QuantFormat::Q4_0, x, b),
    };
    let mut out = vec![0u8; n / format.block_len() * format.block_bytes()];
    // Each block depends on its own weights only, so blocks pack in parallel (64 per task) with the
    // same bytes as in order; q4_K's scale search makes this the slow part of writing a GGUF.
    const PER_TASK: usize = 64;
    out.par_chunks_mut(PER_TASK * format.block_bytes())
        .zip(values.par_chunks(PER_TASK * format.block_len()))
        .for_each(|(out, x)| {
            for (x, b) in x
                .chunks_exact(format.block_len())
                .zip(out.chunks_exact_mut(format.block_bytes()))
            {
                pack(x, b);
            }
        });
    Ok(out)
}
